//! The routing table: which vhost a Host header names on a listener, and which
//! route of that vhost a path takes (docs/config.md#vhostsname).
//!
//! Host matching: an exact name beats the longest matching `*.suffix`, which
//! beats `*`; the port is stripped and case is ignored. Paths: the longest
//! matching prefix wins (a plain string prefix, as nginx's `location /prefix`).
//! A lookup allocates nothing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{HostPattern, Vhost};

/// The longest Host header we route; longer names cannot be valid DNS names.
const MAX_HOST_LEN: usize = 255;

/// One route, compiled: the upstream is an index into the snapshot's pools.
#[derive(Debug)]
pub struct RouteEntry {
    pub prefix: Box<str>,
    pub upstream: usize,
    pub strip_prefix: bool,
}

impl RouteEntry {
    /// The path to send upstream: with `strip_prefix`, the prefix is removed and
    /// a leading `/` kept. `None` when the path is unchanged.
    pub fn rewritten_path(&self, path: &str) -> Option<String> {
        if !self.strip_prefix {
            return None;
        }
        let rest = &path[self.prefix.len()..];
        Some(if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        })
    }
}

/// A vhost's routes, longest prefix first.
#[derive(Debug)]
pub struct VhostRoutes {
    pub name: Arc<str>,
    /// Its position in the config, for the snapshot's per-vhost counters.
    pub index: usize,
    routes: Vec<RouteEntry>,
}

impl VhostRoutes {
    fn lookup(&self, path: &str) -> Option<&RouteEntry> {
        self.routes
            .iter()
            .find(|route| path.starts_with(&*route.prefix))
    }
}

/// Which vhost serves which Host on one listener.
#[derive(Debug, Default)]
struct HostTable {
    exact: HashMap<Box<str>, usize>,
    /// Keyed by the suffix with its leading dot: `.example.com`.
    suffixes: HashMap<Box<str>, usize>,
    any: Option<usize>,
}

impl HostTable {
    fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(&vhost) = self.exact.get(host) {
            return Some(vhost);
        }
        if !self.suffixes.is_empty() {
            // The leftmost dot gives the longest suffix.
            for (index, byte) in host.bytes().enumerate() {
                if byte == b'.' {
                    if let Some(&vhost) = self.suffixes.get(&host[index..]) {
                        return Some(vhost);
                    }
                }
            }
        }
        self.any
    }
}

/// The result of a lookup.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    pub vhost: &'a VhostRoutes,
    pub route: &'a RouteEntry,
}

/// Routing for every listener of a snapshot.
#[derive(Debug)]
pub struct Router {
    /// One table per listener, by listener name: names stay stable across
    /// reloads while positions in the config may not.
    tables: Vec<(Box<str>, HostTable)>,
    vhosts: Vec<VhostRoutes>,
}

impl Router {
    /// Compiles the vhosts of a validated config for the listeners named;
    /// `upstream_index` maps an upstream name to its pool index.
    pub fn build(
        vhosts: &[Vhost],
        listener_names: &[&str],
        upstream_index: impl Fn(&str) -> usize,
    ) -> Router {
        let mut tables: Vec<(Box<str>, HostTable)> = listener_names
            .iter()
            .map(|name| (Box::from(*name), HostTable::default()))
            .collect();
        let mut compiled = Vec::with_capacity(vhosts.len());
        for (vhost_index, vhost) in vhosts.iter().enumerate() {
            let mut routes: Vec<RouteEntry> = vhost
                .routes
                .iter()
                .map(|route| RouteEntry {
                    prefix: route.path.clone().into_boxed_str(),
                    upstream: upstream_index(&route.upstream),
                    strip_prefix: route.strip_prefix,
                })
                .collect();
            routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
            compiled.push(VhostRoutes {
                name: Arc::from(vhost.name.as_str()),
                index: vhost_index,
                routes,
            });
            for (listener_index, listener) in listener_names.iter().enumerate() {
                if !vhost.listeners.iter().any(|name| name == listener) {
                    continue;
                }
                let table = &mut tables[listener_index].1;
                for pattern in &vhost.hosts {
                    match pattern {
                        HostPattern::Exact(name) => {
                            table
                                .exact
                                .insert(name.clone().into_boxed_str(), vhost_index);
                        }
                        HostPattern::Suffix(suffix) => {
                            table
                                .suffixes
                                .insert(suffix.clone().into_boxed_str(), vhost_index);
                        }
                        HostPattern::Any => table.any = Some(vhost_index),
                    }
                }
            }
        }
        Router {
            tables,
            vhosts: compiled,
        }
    }

    /// Finds the route for a request on the listener named `listener`. `host`
    /// is the raw Host header or :authority, port and all, any case.
    pub fn lookup(&self, listener: &str, host: &str, path: &str) -> Option<Matched<'_>> {
        let (_, table) = self.tables.iter().find(|(name, _)| **name == *listener)?;
        let mut buffer = [0u8; MAX_HOST_LEN];
        let host = normalize_host(host, &mut buffer)?;
        let vhost = &self.vhosts[table.lookup(host)?];
        let route = vhost.lookup(path)?;
        Some(Matched { vhost, route })
    }
}

/// Strips the port and lower-cases `host` into `buffer`, without allocating.
fn normalize_host<'b>(host: &str, buffer: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let without_port = if host.starts_with('[') {
        // [v6]:port
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let without_dot = without_port.strip_suffix('.').unwrap_or(without_port);
    let bytes = without_dot.as_bytes();
    if bytes.len() > MAX_HOST_LEN {
        return None;
    }
    let out = &mut buffer[..bytes.len()];
    for (dst, src) in out.iter_mut().zip(bytes) {
        *dst = src.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;

    fn vhost(name: &str, hosts: &[HostPattern], routes: &[(&str, &str, bool)]) -> Vhost {
        Vhost {
            name: name.into(),
            hosts: hosts.to_vec(),
            listeners: vec!["web".into()],
            routes: routes
                .iter()
                .map(|(path, upstream, strip_prefix)| Route {
                    path: path.to_string(),
                    upstream: upstream.to_string(),
                    strip_prefix: *strip_prefix,
                })
                .collect(),
        }
    }

    fn router() -> Router {
        let vhosts = vec![
            vhost(
                "exact",
                &[HostPattern::Exact("shop.example.com".into())],
                &[
                    ("/", "web", false),
                    ("/api/", "api", true),
                    ("/api/v2/", "v2", false),
                ],
            ),
            vhost(
                "wild",
                &[HostPattern::Suffix(".shop.example.com".into())],
                &[("/", "wild", false)],
            ),
            vhost(
                "deeper",
                &[HostPattern::Suffix(".eu.shop.example.com".into())],
                &[("/", "deeper", false)],
            ),
            vhost(
                "fallback",
                &[HostPattern::Any],
                &[("/static/", "static", false)],
            ),
        ];
        let names = ["web", "api", "v2", "wild", "deeper", "static"];
        Router::build(&vhosts, &["web"], |name| {
            names.iter().position(|n| *n == name).unwrap()
        })
    }

    fn upstream_of(router: &Router, host: &str, path: &str) -> Option<&'static str> {
        let names = ["web", "api", "v2", "wild", "deeper", "static"];
        router
            .lookup("web", host, path)
            .map(|m| names[m.route.upstream])
    }

    #[test]
    fn exact_beats_wildcard_beats_default() {
        let router = router();
        assert_eq!(upstream_of(&router, "shop.example.com", "/"), Some("web"));
        assert_eq!(
            upstream_of(&router, "SHOP.Example.com:8080", "/"),
            Some("web")
        );
        assert_eq!(
            upstream_of(&router, "a.shop.example.com", "/"),
            Some("wild")
        );
        assert_eq!(
            upstream_of(&router, "a.b.shop.example.com", "/"),
            Some("wild")
        );
        assert_eq!(
            upstream_of(&router, "x.eu.shop.example.com", "/"),
            Some("deeper")
        );
        assert_eq!(
            upstream_of(&router, "other.org", "/static/a.css"),
            Some("static")
        );
        assert_eq!(upstream_of(&router, "shop.example.com.", "/"), Some("web"));
    }

    #[test]
    fn longest_prefix_wins() {
        let router = router();
        assert_eq!(
            upstream_of(&router, "shop.example.com", "/api/x"),
            Some("api")
        );
        assert_eq!(
            upstream_of(&router, "shop.example.com", "/api/v2/x"),
            Some("v2")
        );
        assert_eq!(
            upstream_of(&router, "shop.example.com", "/apix"),
            Some("web")
        );
    }

    #[test]
    fn no_route_is_none() {
        let router = router();
        assert!(router.lookup("web", "other.org", "/").is_none());
        assert!(router.lookup("admin", "shop.example.com", "/").is_none());
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let route = RouteEntry {
            prefix: "/api/".into(),
            upstream: 0,
            strip_prefix: true,
        };
        assert_eq!(
            route.rewritten_path("/api/users?x=1").unwrap(),
            "/users?x=1"
        );
        assert_eq!(route.rewritten_path("/api/").unwrap(), "/");
        let route = RouteEntry {
            prefix: "/api".into(),
            upstream: 0,
            strip_prefix: true,
        };
        assert_eq!(route.rewritten_path("/api/users").unwrap(), "/users");
        assert_eq!(route.rewritten_path("/api").unwrap(), "/");
    }

    #[test]
    fn ipv6_host_port_is_stripped() {
        let mut buffer = [0u8; MAX_HOST_LEN];
        assert_eq!(normalize_host("[::1]:8080", &mut buffer), Some("[::1]"));
        assert_eq!(
            normalize_host("Example.COM", &mut buffer),
            Some("example.com")
        );
    }
}
