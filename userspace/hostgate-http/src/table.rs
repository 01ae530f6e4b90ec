//! The compiled routing table: built whole from every valid vhost, then
//! never changed (the daemon swaps in a new one), so a lookup takes no lock.
//!
//! Lookup order: the exact host, else the longest `*.suffix` wildcard that
//! the host ends with (`*.example.com` serves `a.example.com` and
//! `a.b.example.com`, not `example.com`), then within that vhost the
//! longest path prefix the path starts with (a byte prefix, as nginx's
//! prefix locations: `/api` also matches `/apix`; declare `/api/` to mean
//! the directory). Hosts compare case-insensitively, without a port or a
//! trailing dot.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use crate::{
    balance::Pool,
    model::{Route, Vhost},
};

/// A vhost ready to serve: routes sorted longest prefix first.
#[derive(Debug)]
pub struct CompiledVhost {
    pub vhost: Vhost,
    /// (prefix, pool), longest prefix first.
    routes: Vec<(String, Pool)>,
}

impl CompiledVhost {
    fn new(vhost: Vhost) -> CompiledVhost {
        let mut routes: Vec<(String, Pool)> = vhost
            .routes
            .iter()
            .map(|Route { prefix, backends }| (prefix.clone(), Pool::new(backends.clone(), vhost.balance)))
            .collect();
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        CompiledVhost { vhost, routes }
    }

    /// The route serving `path`, if any prefix matches.
    pub fn route(&self, path: &[u8]) -> Option<(&str, &Pool)> {
        self.routes.iter().find(|(p, _)| path.starts_with(p.as_bytes())).map(|(p, pool)| (p.as_str(), pool))
    }

    pub fn pools(&self) -> impl Iterator<Item = (&str, &Pool)> {
        self.routes.iter().map(|(p, pool)| (p.as_str(), pool))
    }
}

/// What serves one request.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub vhost: &'a CompiledVhost,
    pub prefix: &'a str,
    pub pool: &'a Pool,
}

/// Every vhost, indexed for lookup.
#[derive(Debug, Default)]
pub struct RoutingTable {
    exact: HashMap<String, Arc<CompiledVhost>>,
    /// Keyed by the suffix after `*.` (`example.com` for `*.example.com`).
    wildcards: HashMap<String, Arc<CompiledVhost>>,
    /// Longest wildcard suffix in labels: bounds the lookup loop.
    max_wildcard_labels: usize,
}

impl RoutingTable {
    /// Compiles `vhosts`; invalid ones are left out and returned with
    /// their error, so one bad entry never affects the others.
    pub fn build(vhosts: impl IntoIterator<Item = Vhost>) -> (RoutingTable, Vec<(String, crate::VhostError)>) {
        let mut table = RoutingTable::default();
        let mut refused = Vec::new();
        for v in vhosts {
            if let Err(e) = v.validate() {
                refused.push((v.host.clone(), e));
                continue;
            }
            let host = v.host.clone();
            match host.strip_prefix("*.") {
                Some(suffix) => {
                    table.max_wildcard_labels = table.max_wildcard_labels.max(suffix.split('.').count());
                    table.wildcards.insert(suffix.to_string(), Arc::new(CompiledVhost::new(v)));
                }
                None => {
                    table.exact.insert(host, Arc::new(CompiledVhost::new(v)));
                }
            }
        }
        (table, refused)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every vhost (for health checks and counters).
    pub fn vhosts(&self) -> impl Iterator<Item = &Arc<CompiledVhost>> {
        self.exact.values().chain(self.wildcards.values())
    }

    /// The vhost for a `Host` header (or :authority) value.
    pub fn vhost(&self, host: &[u8]) -> Option<&Arc<CompiledVhost>> {
        let host = normalise_host(host)?;
        if let Some(v) = self.exact.get(&host) {
            return Some(v);
        }
        // Suffixes after each dot, longest first; only as many as the
        // longest wildcard has labels are worth trying.
        let dots: Vec<usize> = host.match_indices('.').map(|(i, _)| i).collect();
        // The suffix after the k-th dot has len - k labels.
        let skip = dots.len().saturating_sub(self.max_wildcard_labels);
        dots.iter().skip(skip).find_map(|&i| self.wildcards.get(&host[i + 1..]))
    }

    /// The vhost and route for a request; `None` for an unknown host or a
    /// path no prefix matches.
    pub fn select(&self, host: &[u8], path: &[u8]) -> Option<Selected<'_>> {
        let vhost = self.vhost(host)?;
        let (prefix, pool) = vhost.route(path)?;
        Some(Selected { vhost, prefix, pool })
    }

    /// Marks `addr` in every pool that has it.
    pub fn set_healthy(&self, addr: SocketAddr, healthy: bool) {
        for v in self.vhosts() {
            for (_, pool) in v.pools() {
                pool.set_healthy(addr, healthy);
            }
        }
    }
}

/// Lowercase host without port, brackets or trailing dot; `None` when it
/// cannot be a name we serve (empty, not ASCII, too long).
pub fn normalise_host(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let host = if let Some(rest) = text.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        match text.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => text,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 || !host.is_ascii() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Backend;

    fn vhost(host: &str, prefixes: &[&str]) -> Vhost {
        let routes = prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| Route {
                prefix: p.to_string(),
                backends: vec![Backend { addr: SocketAddr::from(([198, 51, 100, i as u8 + 1], 80)), weight: 1 }],
            })
            .collect();
        Vhost::new(host, "acme", routes)
    }

    fn table() -> RoutingTable {
        let (t, refused) = RoutingTable::build([
            vhost("shop.example.com", &["/", "/api", "/api/v2"]),
            vhost("*.example.com", &["/"]),
            vhost("*.eu.example.com", &["/"]),
            vhost("BAD host", &["/"]),
        ]);
        assert_eq!(refused.len(), 1);
        t
    }

    fn host_of(t: &RoutingTable, h: &str) -> Option<String> {
        t.vhost(h.as_bytes()).map(|v| v.vhost.host.clone())
    }

    #[test]
    fn exact_then_longest_wildcard() {
        let t = table();
        assert_eq!(host_of(&t, "shop.example.com").as_deref(), Some("shop.example.com"));
        assert_eq!(host_of(&t, "SHOP.Example.COM:8080").as_deref(), Some("shop.example.com"));
        assert_eq!(host_of(&t, "shop.example.com.").as_deref(), Some("shop.example.com"));
        assert_eq!(host_of(&t, "blog.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(host_of(&t, "a.b.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(host_of(&t, "x.eu.example.com").as_deref(), Some("*.eu.example.com"));
        assert_eq!(host_of(&t, "example.com"), None);
        assert_eq!(host_of(&t, "other.test"), None);
        assert_eq!(host_of(&t, "[2001:db8::1]:80"), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        let prefix = |p: &str| t.select(b"shop.example.com", p.as_bytes()).map(|s| s.prefix.to_string());
        assert_eq!(prefix("/").as_deref(), Some("/"));
        assert_eq!(prefix("/index.html").as_deref(), Some("/"));
        assert_eq!(prefix("/api").as_deref(), Some("/api"));
        assert_eq!(prefix("/api/v1/x").as_deref(), Some("/api"));
        assert_eq!(prefix("/api/v2/x").as_deref(), Some("/api/v2"));
        assert_eq!(prefix("nopath"), None);
    }

    fn naive_prefix<'a>(prefixes: &'a [String], path: &[u8]) -> Option<&'a str> {
        prefixes.iter().filter(|p| path.starts_with(p.as_bytes())).max_by_key(|p| p.len()).map(String::as_str)
    }

    fn naive_host(hosts: &[String], host: &str) -> Option<String> {
        if hosts.iter().any(|h| h == host) {
            return Some(host.to_string());
        }
        hosts
            .iter()
            .filter_map(|h| h.strip_prefix("*."))
            .filter(|s| host.ends_with(&format!(".{s}")))
            .max_by_key(|s| s.len())
            .map(|s| format!("*.{s}"))
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(host in prop::collection::vec(any::<u8>(), 0..300),
                                           path in prop::collection::vec(any::<u8>(), 0..300)) {
            let t = table();
            let _ = t.select(&host, &path);
        }

        #[test]
        fn longest_prefix_equals_a_naive_scan(
            prefixes in prop::collection::btree_set("/[a-c/]{0,6}", 1..8),
            path in "/[a-c/]{0,10}",
        ) {
            let prefixes: Vec<String> = prefixes.into_iter().collect();
            let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            let (t, refused) = RoutingTable::build([vhost("a.example.com", &refs)]);
            prop_assert!(refused.is_empty());
            let got = t.select(b"a.example.com", path.as_bytes()).map(|s| s.prefix);
            prop_assert_eq!(got, naive_prefix(&prefixes, path.as_bytes()));
        }

        #[test]
        fn host_lookup_equals_a_naive_scan(
            names in prop::collection::btree_set("(\\*\\.)?[ab]{1,2}(\\.[ab]{1,2}){1,3}", 1..10),
            host in "[ab]{1,2}(\\.[ab]{1,2}){0,4}",
        ) {
            let hosts: Vec<String> = names.into_iter().collect();
            let (t, refused) = RoutingTable::build(hosts.iter().map(|h| vhost(h, &["/"])));
            prop_assert!(refused.is_empty(), "{:?}", refused);
            prop_assert_eq!(host_of(&t, &host), naive_host(&hosts, &host));
        }
    }
}
