//! Picking a backend of a route's pool.
//!
//! - Round robin is nginx's *smooth weighted round robin*: every pick adds
//!   each healthy backend's weight to its running score, takes the highest
//!   and subtracts the healthy total from it. Over any window of
//!   `sum(weights)` picks each backend is chosen exactly `weight` times, and
//!   the picks are interleaved (5:1:1 gives a a b a c a a, not a a a a a b c).
//! - Client hashing is weighted rendezvous hashing (highest random weight):
//!   each backend scores `-weight / ln(u)` with `u` a uniform hash of
//!   (client IP, backend address) in (0, 1); the highest score wins. Chosen
//!   over a Maglev or ketama table because pools are small (at most 64
//!   backends, so a pick is a short loop), there is no table to rebuild when
//!   health changes, and when a backend fails only the clients it served
//!   move (each to its own second choice), which a test checks.
//!
//! Unhealthy backends are skipped by both; a pool with no healthy backend
//! picks none (the proxy answers 502).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use serde::{Deserialize, Serialize};

use crate::model::Backend;

/// How a vhost spreads requests over a route's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Sticky by client IP (consistent hashing).
    ClientHash,
}

impl std::str::FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" => Ok(Balance::RoundRobin),
            "client-hash" => Ok(Balance::ClientHash),
            _ => Err(format!("{s:?} is not round-robin or client-hash")),
        }
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "round-robin",
            Balance::ClientHash => "client-hash",
        })
    }
}

/// The backends of one route with their health and round-robin state.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Backend>,
    healthy: Vec<AtomicBool>,
    balance: Balance,
    /// Running scores of the smooth weighted round robin. A short critical
    /// section per request; only this pool's requests contend for it.
    scores: Mutex<Vec<i64>>,
}

impl Pool {
    /// A pool with every backend healthy.
    pub fn new(backends: Vec<Backend>, balance: Balance) -> Pool {
        let n = backends.len();
        Pool {
            healthy: (0..n).map(|_| AtomicBool::new(true)).collect(),
            scores: Mutex::new(vec![0; n]),
            backends,
            balance,
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Marks the backend at `addr` (health checks, failed connections).
    pub fn set_healthy(&self, addr: SocketAddr, healthy: bool) {
        for (b, h) in self.backends.iter().zip(&self.healthy) {
            if b.addr == addr {
                h.store(healthy, Ordering::Relaxed);
            }
        }
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.healthy.get(i).is_some_and(|h| h.load(Ordering::Relaxed))
    }

    /// The backend for a request from `client`, skipping `exclude` (a
    /// backend that already failed this request); `None` if none is healthy.
    pub fn pick(&self, client: IpAddr, exclude: Option<SocketAddr>) -> Option<&Backend> {
        let usable = |i: usize| self.is_healthy(i) && Some(self.backends[i].addr) != exclude;
        let i = match self.balance {
            Balance::RoundRobin => self.pick_round_robin(usable),
            Balance::ClientHash => self.pick_hash(client, usable),
        }?;
        self.backends.get(i)
    }

    fn pick_round_robin(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let mut scores = self.scores.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, b) in self.backends.iter().enumerate().filter(|(i, _)| usable(*i)) {
            let w = i64::from(b.weight);
            scores[i] += w;
            total += w;
            if best.is_none_or(|j| scores[i] > scores[j]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        scores[chosen] -= total;
        Some(chosen)
    }

    fn pick_hash(&self, client: IpAddr, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let key = ip_key(client);
        let score = |b: &Backend| {
            let h = mix(key ^ mix(addr_key(b.addr)));
            // A uniform value in (0, 1): 53 bits of the hash, never 0 or 1.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            -f64::from(b.weight) / u.ln()
        };
        (0..self.backends.len())
            .filter(|&i| usable(i))
            .max_by(|&a, &b| score(&self.backends[a]).total_cmp(&score(&self.backends[b])).then(b.cmp(&a)))
    }
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            mix(v as u64) ^ (v >> 64) as u64
        }
    }
}

fn addr_key(a: SocketAddr) -> u64 {
    mix(ip_key(a.ip())) ^ u64::from(a.port())
}

/// splitmix64's finaliser: a fixed, well-spread 64-bit mix (the same on
/// every node and every run, so stickiness survives restarts).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Backend { addr: SocketAddr::from(([198, 51, 100, i as u8 + 1], 80)), weight })
            .collect()
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::from([198, 18, (i >> 8) as u8, i as u8])
    }

    #[test]
    fn smooth_round_robin_interleaves() {
        let pool = Pool::new(backends(&[5, 1, 1]), Balance::RoundRobin);
        let picks: Vec<u8> = (0..7)
            .map(|_| match pool.pick(client(0), None).expect("pick").addr.ip() {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect();
        assert_eq!(picks, [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn unhealthy_backends_are_skipped() {
        for balance in [Balance::RoundRobin, Balance::ClientHash] {
            let pool = Pool::new(backends(&[1, 1]), balance);
            let first = pool.backends()[0].addr;
            pool.set_healthy(first, false);
            for i in 0..50 {
                assert_ne!(pool.pick(client(i), None).expect("pick").addr, first);
            }
            pool.set_healthy(pool.backends()[1].addr, false);
            assert!(pool.pick(client(1), None).is_none(), "no healthy backend, no pick");
        }
    }

    #[test]
    fn exclusion_gives_another_backend() {
        let pool = Pool::new(backends(&[1, 1]), Balance::ClientHash);
        let a = pool.pick(client(7), None).expect("pick").addr;
        let b = pool.pick(client(7), Some(a)).expect("retry").addr;
        assert_ne!(a, b);
    }

    #[test]
    fn only_a_failed_backends_clients_move() {
        let pool = Pool::new(backends(&[1, 2, 1, 3]), Balance::ClientHash);
        let before: Vec<SocketAddr> = (0..2000).map(|i| pool.pick(client(i), None).expect("pick").addr).collect();
        let failed = pool.backends()[1].addr;
        pool.set_healthy(failed, false);
        for (i, was) in before.iter().enumerate() {
            let now = pool.pick(client(i as u32), None).expect("pick").addr;
            if *was != failed {
                assert_eq!(now, *was, "client {i} moved although its backend is up");
            }
        }
    }

    proptest! {
        /// Every window of sum(weights) round-robin picks holds each backend
        /// exactly `weight` times.
        #[test]
        fn round_robin_is_exact_per_cycle(weights in prop::collection::vec(1u32..20, 1..8)) {
            let pool = Pool::new(backends(&weights), Balance::RoundRobin);
            let total: u32 = weights.iter().sum();
            for _ in 0..3 {
                let mut seen: HashMap<SocketAddr, u32> = HashMap::new();
                for _ in 0..total {
                    *seen.entry(pool.pick(client(0), None).expect("pick").addr).or_default() += 1;
                }
                for b in pool.backends() {
                    prop_assert_eq!(seen.get(&b.addr).copied().unwrap_or(0), b.weight);
                }
            }
        }

        /// Client hashing is sticky and, over many clients, follows the weights.
        #[test]
        fn client_hash_follows_weights(weights in prop::collection::vec(1u32..10, 2..6)) {
            let pool = Pool::new(backends(&weights), Balance::ClientHash);
            let n = 20_000u32;
            let mut seen: HashMap<SocketAddr, u32> = HashMap::new();
            for i in 0..n {
                let a = pool.pick(client(i), None).expect("pick").addr;
                prop_assert_eq!(pool.pick(client(i), None).expect("again").addr, a);
                *seen.entry(a).or_default() += 1;
            }
            let total: u32 = weights.iter().sum();
            for b in pool.backends() {
                let expected = f64::from(n) * f64::from(b.weight) / f64::from(total);
                let got = f64::from(seen.get(&b.addr).copied().unwrap_or(0));
                prop_assert!((got - expected).abs() < expected * 0.15 + 60.0, "{}: {} vs {}", b.addr, got, expected);
            }
        }
    }
}
