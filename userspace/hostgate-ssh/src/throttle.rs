//! Per-source throttling of failed authentications, with time passed in
//! (milliseconds on any monotonic clock) so that it is tested without
//! sleeping.
//!
//! A source is an IPv4 address or an IPv6 /64 (one host usually holds a
//! whole /64). `max_failures` failures within `window_ms` ban the source for
//! `ban_ms`; a success forgets its failures, so a CI burst that logs in
//! correctly is never banned. The table is bounded: when full, the entry
//! seen longest ago is dropped.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    pub max_failures: u32,
    pub window_ms: u64,
    pub ban_ms: u64,
    pub max_sources: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig { max_failures: 10, window_ms: 60_000, ban_ms: 300_000, max_sources: 65_536 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Banned until this time.
    Banned {
        until_ms: u64,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    window_start: u64,
    failures: u32,
    banned_until: u64,
    last_seen: u64,
}

#[derive(Debug, Default)]
pub struct Throttle {
    config: ThrottleConfig,
    sources: HashMap<IpAddr, Entry>,
}

/// The unit a ban applies to.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Throttle { config, sources: HashMap::new() }
    }

    /// May `ip` try (again) at `now_ms`?
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Verdict {
        match self.sources.get(&source_key(ip)) {
            Some(e) if e.banned_until > now_ms => Verdict::Banned { until_ms: e.banned_until },
            _ => Verdict::Allowed,
        }
    }

    /// Counts a failed authentication; returns the verdict after it.
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) -> Verdict {
        let key = source_key(ip);
        if !self.sources.contains_key(&key) {
            self.make_room();
        }
        let c = self.config;
        let e = self.sources.entry(key).or_default();
        e.last_seen = now_ms;
        if now_ms.saturating_sub(e.window_start) >= c.window_ms || e.failures == 0 {
            e.window_start = now_ms;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= c.max_failures {
            e.banned_until = now_ms.saturating_add(c.ban_ms);
            e.failures = 0;
        }
        self.check(ip, now_ms)
    }

    /// A success forgets the source's failures (not a running ban).
    pub fn succeeded(&mut self, ip: IpAddr, now_ms: u64) {
        let key = source_key(ip);
        if self.sources.get(&key).is_some_and(|e| e.banned_until <= now_ms) {
            self.sources.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn make_room(&mut self) {
        if self.sources.len() < self.config.max_sources.max(1) {
            return;
        }
        if let Some(oldest) = self.sources.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| *k) {
            self.sources.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> ThrottleConfig {
        ThrottleConfig { max_failures: 3, window_ms: 1_000, ban_ms: 10_000, max_sources: 4 }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn bans_after_max_failures_in_window_and_lifts() {
        let mut t = Throttle::new(cfg());
        let a = ip("203.0.113.5");
        assert_eq!(t.failed(a, 0), Verdict::Allowed);
        assert_eq!(t.failed(a, 100), Verdict::Allowed);
        assert_eq!(t.failed(a, 200), Verdict::Banned { until_ms: 10_200 });
        assert_eq!(t.check(ip("203.0.113.6"), 300), Verdict::Allowed, "others unaffected");
        assert_eq!(t.check(a, 10_199), Verdict::Banned { until_ms: 10_200 });
        assert_eq!(t.check(a, 10_200), Verdict::Allowed);
    }

    #[test]
    fn slow_failures_and_successes_do_not_ban() {
        let mut t = Throttle::new(cfg());
        let a = ip("203.0.113.5");
        for i in 0..10 {
            assert_eq!(t.failed(a, i * 1_000), Verdict::Allowed, "one per window");
        }
        t.failed(a, 20_000);
        t.failed(a, 20_001);
        t.succeeded(a, 20_002);
        assert_eq!(t.failed(a, 20_003), Verdict::Allowed, "success forgot the failures");
    }

    #[test]
    fn ipv6_by_slash_64() {
        let mut t = Throttle::new(cfg());
        for (i, s) in ["2001:db8::1", "2001:db8::2", "2001:db8::3"].iter().enumerate() {
            t.failed(ip(s), i as u64);
        }
        assert!(matches!(t.check(ip("2001:db8::ffff"), 5), Verdict::Banned { .. }));
        assert_eq!(t.check(ip("2001:db8:0:1::1"), 5), Verdict::Allowed);
    }

    proptest! {
        /// The table never exceeds its bound, and a ban never outlasts ban_ms
        /// after the last failure.
        #[test]
        fn bounded_and_bans_end(events in proptest::collection::vec((0u8..8, 0u64..500), 0..200)) {
            let mut t = Throttle::new(cfg());
            let mut now = 0;
            for (host, dt) in events {
                now += dt;
                t.failed(IpAddr::from([203, 0, 113, host]), now);
                prop_assert!(t.len() <= 4);
            }
            for host in 0..8 {
                prop_assert_eq!(t.check(IpAddr::from([203, 0, 113, host]), now + 10_000), Verdict::Allowed);
            }
        }
    }
}
