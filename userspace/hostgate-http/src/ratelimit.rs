//! Per-vhost request rate limits by client address: a token bucket per
//! client (IPv4 address, IPv6 /64, since one host gets a whole /64), in a
//! bounded table. Time is passed in (nanoseconds from any fixed origin), so
//! the logic is tested without clocks.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

/// The most clients one vhost's limiter remembers. When the table is full,
/// buckets that have refilled (clients that went quiet) are forgotten; if
/// every one is still in use, an unknown client is let through and counted
/// as [`Verdict::Untracked`] rather than refused: TCP clients cannot spoof
/// their addresses, so a full table means many real clients, and refusing
/// newcomers would let a crowd lock everyone else out.
pub const MAX_CLIENTS: usize = 65_536;

/// `per_second` requests on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    pub const MAX: u32 = 1_000_000;

    /// Both 1..=1,000,000, burst at least 1; errors name the field.
    pub fn validate(&self) -> Result<(), crate::VhostError> {
        let bad = |m: String| Err(crate::VhostError { field: "rate-limit".into(), message: m });
        if self.per_second == 0 || self.per_second > Self::MAX {
            return bad(format!("{} requests/s is not within 1..={}", self.per_second, Self::MAX));
        }
        if self.burst == 0 || self.burst > Self::MAX {
            return bad(format!("burst {} is not within 1..={}", self.burst, Self::MAX));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit: answer 429.
    Limited,
    /// Let through without a bucket (the table is full of active clients).
    Untracked,
}

/// The bucket key: IPv4 address or the IPv6 /64 (v4-mapped as IPv4).
pub fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(a) >> 64 << 64) | (1 << 32),
        },
    }
}

const NANOS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in units of 1/1e9 request, so refills are exact integers.
    tokens: u64,
    at: u64,
}

/// One vhost's limiter.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    buckets: HashMap<u128, Bucket>,
    max_clients: usize,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter::with_capacity(limit, MAX_CLIENTS)
    }

    pub fn with_capacity(limit: RateLimit, max_clients: usize) -> Limiter {
        Limiter { limit, buckets: HashMap::new(), max_clients: max_clients.max(1) }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limit.burst) * NANOS
    }

    fn refill(&self, b: &mut Bucket, now: u64) {
        let elapsed = now.saturating_sub(b.at);
        let add = u128::from(elapsed) * u128::from(self.limit.per_second);
        b.tokens = (u128::from(b.tokens) + add).min(u128::from(self.capacity())) as u64;
        b.at = b.at.max(now);
    }

    /// One request from `ip` at `now` (nanoseconds).
    pub fn check(&mut self, ip: IpAddr, now: u64) -> Verdict {
        let key = client_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_clients {
            self.forget_idle(now);
            if self.buckets.len() >= self.max_clients {
                return Verdict::Untracked;
            }
        }
        let cap = self.capacity();
        let mut b = self.buckets.get(&key).copied().unwrap_or(Bucket { tokens: cap, at: now });
        self.refill(&mut b, now);
        let verdict = if b.tokens >= NANOS {
            b.tokens -= NANOS;
            Verdict::Allowed
        } else {
            Verdict::Limited
        };
        self.buckets.insert(key, b);
        verdict
    }

    /// Drops buckets that are full again: a new bucket would be the same.
    pub fn forget_idle(&mut self, now: u64) {
        let (cap, rate) = (self.capacity(), u128::from(self.limit.per_second));
        self.buckets.retain(|_, b| {
            let refilled = u128::from(b.tokens) + u128::from(now.saturating_sub(b.at)) * rate;
            refilled < u128::from(cap)
        });
    }

    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn burst_then_rate() {
        let mut l = Limiter::new(RateLimit { per_second: 2, burst: 3 });
        let c = ip("198.18.0.2");
        let got: Vec<Verdict> = (0..4).map(|_| l.check(c, 0)).collect();
        assert_eq!(got, [Verdict::Allowed, Verdict::Allowed, Verdict::Allowed, Verdict::Limited]);
        assert_eq!(l.check(c, NANOS / 4), Verdict::Limited, "half a token after 250 ms");
        assert_eq!(l.check(c, NANOS / 2), Verdict::Allowed, "one token after 500 ms");
        assert_eq!(l.check(ip("198.18.0.3"), NANOS / 2), Verdict::Allowed, "another client has its own bucket");
    }

    #[test]
    fn ipv6_by_64() {
        let mut l = Limiter::new(RateLimit { per_second: 1, burst: 1 });
        assert_eq!(l.check(ip("2001:db8:1:2::1"), 0), Verdict::Allowed);
        assert_eq!(l.check(ip("2001:db8:1:2::ffff"), 0), Verdict::Limited, "same /64");
        assert_eq!(l.check(ip("2001:db8:1:3::1"), 0), Verdict::Allowed);
        assert_eq!(client_key(ip("::ffff:198.18.0.2")), client_key(ip("198.18.0.2")));
        assert_ne!(client_key(ip("::c612:2")), client_key(ip("198.18.0.2")), "v4-compatible is not v4");
    }

    #[test]
    fn full_table_forgets_idle_then_lets_through() {
        let mut l = Limiter::with_capacity(RateLimit { per_second: 1, burst: 2 }, 2);
        assert_eq!(l.check(ip("198.18.0.1"), 0), Verdict::Allowed);
        assert_eq!(l.check(ip("198.18.0.2"), 0), Verdict::Allowed);
        assert_eq!(l.check(ip("198.18.0.3"), 0), Verdict::Untracked);
        // After a second both buckets are full again and are forgotten.
        assert_eq!(l.check(ip("198.18.0.3"), NANOS), Verdict::Allowed);
        assert_eq!(l.clients(), 1);
    }

    proptest! {
        /// Over any schedule, one client gets at most burst + rate * seconds.
        #[test]
        fn never_more_than_the_budget(rate in 1u32..50, burst in 1u32..50,
                                      gaps in prop::collection::vec(0u64..200_000_000, 1..300)) {
            let mut l = Limiter::new(RateLimit { per_second: rate, burst });
            let (mut now, mut allowed) = (0u64, 0u64);
            for g in gaps {
                now += g;
                if l.check(ip("198.18.0.2"), now) == Verdict::Allowed {
                    allowed += 1;
                }
            }
            let budget = u64::from(burst) + (u128::from(now) * u128::from(rate) / u128::from(NANOS)) as u64;
            prop_assert!(allowed <= budget, "{allowed} > {budget}");
        }
    }
}
