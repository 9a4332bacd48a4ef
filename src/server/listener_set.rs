//! The set of running listeners, changed by reloads without ever rebinding a
//! listener that stays: new ones are bound first (all or none, so a listener
//! that cannot be bound fails the whole reload), then removed ones stop
//! accepting and their connections drain.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;

/// A listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {what}: {source}")]
pub struct BindError {
    pub what: String,
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// A listener as bound: its port is the real one even when the config said 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    pub name: String,
    pub addr: SocketAddr,
}

#[derive(Debug)]
struct Running {
    name: String,
    configured: SocketAddr,
    bound: SocketAddr,
    stop: watch::Sender<bool>,
}

/// Sockets bound for a change of the set, not yet serving.
#[derive(Debug)]
pub struct BindPlan {
    wanted: Vec<(String, SocketAddr)>,
    bound: Vec<(String, SocketAddr, TcpListener)>,
}

/// Listeners by name, each with its own stop signal.
#[derive(Debug)]
pub struct ListenerSet {
    /// What these listeners serve, for logs and errors: "listener", "admin API".
    kind: &'static str,
    running: Vec<Running>,
}

impl ListenerSet {
    pub fn new(kind: &'static str) -> ListenerSet {
        ListenerSet {
            kind,
            running: Vec::new(),
        }
    }

    /// Binds every wanted `(name, address)` that is not running as such now.
    pub async fn bind_missing(
        &self,
        wanted: &[(String, SocketAddr)],
    ) -> Result<BindPlan, BindError> {
        let mut bound = Vec::new();
        for (name, addr) in wanted {
            if self.find(name, *addr).is_some() {
                continue;
            }
            let socket = bind(*addr).map_err(|source| BindError {
                what: format!("{} `{name}`", self.kind),
                addr: *addr,
                source,
            })?;
            bound.push((name.clone(), *addr, socket));
        }
        Ok(BindPlan {
            wanted: wanted.to_vec(),
            bound,
        })
    }

    /// Stops the listeners the plan does not want and starts its new ones:
    /// `serve(name, socket, stop)` must spawn the accept loop.
    pub fn switch_to(
        &mut self,
        plan: BindPlan,
        mut serve: impl FnMut(&str, TcpListener, watch::Receiver<bool>),
    ) {
        let wanted = plan.wanted;
        self.running.retain(|running| {
            let keep = wanted
                .iter()
                .any(|(name, addr)| *name == running.name && *addr == running.configured);
            if !keep {
                tracing::info!(kind = self.kind, listener = %running.name, addr = %running.bound, "removed: no new connections, draining");
                running.stop.send_replace(true);
            }
            keep
        });
        for (name, configured, socket) in plan.bound {
            let bound = socket.local_addr().unwrap_or(configured);
            let (stop, stop_rx) = watch::channel(false);
            tracing::info!(kind = self.kind, listener = %name, addr = %bound, "listening");
            serve(&name, socket, stop_rx);
            self.running.push(Running {
                name,
                configured,
                bound,
                stop,
            });
        }
        // Keep the config's order.
        self.running.sort_by_key(|running| {
            wanted
                .iter()
                .position(|(name, _)| *name == running.name)
                .unwrap_or(usize::MAX)
        });
    }

    /// Stops every listener.
    pub fn stop_all(&mut self) {
        for running in self.running.drain(..) {
            running.stop.send_replace(true);
        }
    }

    pub fn bound(&self) -> Vec<BoundListener> {
        self.running
            .iter()
            .map(|running| BoundListener {
                name: running.name.clone(),
                addr: running.bound,
            })
            .collect()
    }

    fn find(&self, name: &str, configured: SocketAddr) -> Option<&Running> {
        self.running
            .iter()
            .find(|running| running.name == name && running.configured == configured)
    }
}

/// Connections the kernel may hold for a listener before usherd accepts
/// them (capped by `net.core.somaxconn`). Rust's default is 128: with
/// `max_connections` taken, connections past that many have their SYNs
/// dropped and retried after 1 s, 3 s, ... instead of waiting in line for
/// a slot (nginx asks for 511, HAProxy for its `maxconn`).
const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket on `addr` (`SO_REUSEADDR` as the standard library's).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
