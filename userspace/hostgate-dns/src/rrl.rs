//! Response rate limiting, after NSD's and Knot's RRL: responses are
//! accounted per (client prefix, response class, name), each such flow
//! gets `responses_per_second` tokens a second (bursts up to one second's
//! worth), and a response over budget is dropped, except every `slip`-th,
//! which is sent as an empty truncated reply so that a real client behind
//! a spoofed flood can still retry over TCP.
//!
//! Memory is a fixed table of buckets indexed by a keyed hash of the flow;
//! a flow colliding with another takes the bucket over (as NSD does): an
//! attacker can at worst reset someone's budget to full, never exhaust
//! memory. The time is passed in, so this is deterministic.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use hickory_proto::rr::{Name, RecordType};

/// Milli-tokens per token: budgets refill per millisecond.
const MILLI: u64 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses a second per flow; 0 disables the limiter.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response goes out truncated; 0 drops them
    /// all, 1 truncates them all.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Buckets (rounded up to a power of two).
    pub table_size: usize,
}

impl Default for RrlConfig {
    /// NSD's rate and slip; Knot's /56 for IPv6 (one customer's
    /// allocation, where NSD's /64 lets a host rotate through 256).
    fn default() -> Self {
        Self { responses_per_second: 200, slip: 2, ipv4_prefix: 24, ipv6_prefix: 56, table_size: 1 << 16 }
    }
}

/// What kind of response a flow is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseClass {
    /// Data (keyed with its qtype as well).
    Positive,
    NoData,
    NxDomain,
    Referral,
    /// REFUSED, FORMERR, NOTIMP and the like.
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Send,
    /// Send an empty TC=1 reply instead.
    Slip,
    Drop,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    flow: u64,
    used: bool,
    milli_tokens: u64,
    last_ms: u64,
    limited: u32,
}

#[derive(Clone, Debug)]
pub struct Rrl {
    config: RrlConfig,
    seed: u64,
    buckets: Vec<Bucket>,
}

impl Rrl {
    /// `seed` keys the flow hash: take it from a random source, so a
    /// flooder cannot aim collisions at a victim's bucket.
    pub fn new(config: RrlConfig, seed: u64) -> Self {
        let size = config.table_size.max(1).next_power_of_two();
        Self { config, seed, buckets: vec![Bucket::default(); size] }
    }

    pub fn config(&self) -> &RrlConfig {
        &self.config
    }

    /// Accounts one response at `now_ms` (any monotonic milliseconds) and
    /// says what to do with it.
    pub fn check(
        &mut self,
        client: IpAddr,
        class: ResponseClass,
        name: &Name,
        qtype: RecordType,
        now_ms: u64,
    ) -> Action {
        let rate = u64::from(self.config.responses_per_second);
        if rate == 0 {
            return Action::Send;
        }
        let flow = self.flow(client, class, name, qtype);
        let mask = self.buckets.len() - 1;
        let Some(bucket) = self.buckets.get_mut(flow as usize & mask) else { return Action::Send };
        let burst = rate * MILLI;
        if !bucket.used || bucket.flow != flow {
            *bucket = Bucket { flow, used: true, milli_tokens: burst, last_ms: now_ms, limited: 0 };
        }
        let elapsed = now_ms.saturating_sub(bucket.last_ms);
        bucket.milli_tokens = bucket.milli_tokens.saturating_add(elapsed.saturating_mul(rate)).min(burst);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.milli_tokens >= MILLI {
            bucket.milli_tokens -= MILLI;
            return Action::Send;
        }
        bucket.limited = bucket.limited.wrapping_add(1);
        match self.config.slip {
            0 => Action::Drop,
            s if bucket.limited % s == 0 => Action::Slip,
            _ => Action::Drop,
        }
    }

    fn flow(&self, client: IpAddr, class: ResponseClass, name: &Name, qtype: RecordType) -> u64 {
        let mut h = DefaultHasher::new();
        self.seed.hash(&mut h);
        prefix(client, self.config.ipv4_prefix, self.config.ipv6_prefix).hash(&mut h);
        class.hash(&mut h);
        // `Name` hashes case-insensitively
        name.hash(&mut h);
        if class == ResponseClass::Positive {
            u16::from(qtype).hash(&mut h);
        }
        h.finish()
    }
}

/// The client's network: the address with host bits cleared.
fn prefix(addr: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(v4.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(v6.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn rrl(rate: u32, slip: u32) -> Rrl {
        Rrl::new(RrlConfig { responses_per_second: rate, slip, table_size: 1024, ..RrlConfig::default() }, 7)
    }

    fn name() -> Name {
        Name::from_str("www.example.com.").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(r: &mut Rrl, client: &str, n: usize, now: u64) -> Vec<Action> {
        (0..n).map(|_| r.check(ip(client), ResponseClass::Positive, &name(), RecordType::A, now)).collect()
    }

    #[test]
    fn a_flow_gets_its_budget_then_slips_every_nth() {
        let mut r = rrl(5, 2);
        let a = run(&mut r, "198.51.100.7", 9, 1000);
        assert_eq!(&a[..5], [Action::Send; 5]);
        assert_eq!(&a[5..], [Action::Drop, Action::Slip, Action::Drop, Action::Slip]);
    }

    #[test]
    fn budgets_refill_with_time() {
        let mut r = rrl(5, 0);
        run(&mut r, "198.51.100.7", 5, 1000);
        assert_eq!(run(&mut r, "198.51.100.7", 1, 1100), [Action::Drop], "0.1 s = half a token");
        assert_eq!(run(&mut r, "198.51.100.7", 1, 1200), [Action::Send]);
        assert_eq!(run(&mut r, "198.51.100.7", 6, 10_000), [vec![Action::Send; 5], vec![Action::Drop]].concat());
    }

    #[test]
    fn prefixes_share_and_others_do_not() {
        let mut r = rrl(3, 0);
        run(&mut r, "198.51.100.7", 3, 0);
        assert_eq!(run(&mut r, "198.51.100.200", 1, 0), [Action::Drop], "same /24");
        assert_eq!(run(&mut r, "203.0.113.7", 1, 0), [Action::Send]);
        run(&mut r, "2001:db8:0:1::1", 3, 0);
        assert_eq!(run(&mut r, "2001:db8:0:ff::2", 1, 0), [Action::Drop], "same /56");
        assert_eq!(run(&mut r, "2001:db8:0:100::2", 1, 0), [Action::Send]);
        let nx = r.check(ip("198.51.100.7"), ResponseClass::NxDomain, &name(), RecordType::A, 0);
        assert_eq!(nx, Action::Send, "another class is another flow");
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = rrl(1, 1);
        // 100 000 /24s of 198.18.0.0/15, the benchmarking range
        let base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0));
        for i in 0..100_000u32 {
            let client = IpAddr::V4((base + (i << 8) % (1 << 17)).into());
            r.check(
                client,
                ResponseClass::NxDomain,
                &Name::from_str(&format!("n{i}.example.com.")).unwrap(),
                RecordType::A,
                0,
            );
        }
        assert_eq!(r.buckets.len(), 1024);
    }

    #[test]
    fn disabled_sends_everything() {
        assert_eq!(run(&mut rrl(0, 2), "198.51.100.7", 1000, 0), vec![Action::Send; 1000]);
    }
}
