//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
//!
//! Each backend walks its own permutation of the table's slots, derived
//! from a hash of its identity (address and port, so every node computes
//! the same table), and claims free slots in turn; a backend of weight w
//! takes w turns per round. The result: slot shares proportional to the
//! weights, and a change of the backend set moves about the changed share
//! of slots, not all of them.

/// Marks an unclaimed slot while building; never in a finished table.
const EMPTY: u32 = u32::MAX;

/// Default table size: prime, as Maglev requires; as Katran's.
pub const DEFAULT_RING_SIZE: u32 = 65_537;

/// One backend as Maglev sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// What the table stores for this backend's slots.
    pub id: u32,
    /// Stable identity hashed into the permutation (e.g. "198.51.100.6:80").
    pub identity: String,
    /// Relative weight; 0 takes no slots.
    pub weight: u32,
}

/// 64-bit FNV-1a with a seed mixed in first: stable across versions and
/// platforms, which a table shared by nodes needs (std's hashers are not).
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in seed.to_le_bytes().iter().chain(data) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (from MurmurHash3's fmix64) so nearby identities spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Whether `n` is prime (table sizes must be).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= u64::from(n) {
        if u64::from(n) % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// Builds a table of `size` slots (a prime). Returns `None` when no backend
/// has a positive weight: the VIP then has nowhere to send new flows.
pub fn build(backends: &[MaglevBackend], size: u32) -> Option<Vec<u32>> {
    debug_assert!(is_prime(size), "Maglev needs a prime table size");
    let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() {
        return None;
    }
    // Order by identity so the result does not depend on input order.
    live.sort_by(|a, b| a.identity.cmp(&b.identity));
    let common = live.iter().fold(0, |g, b| gcd(g, b.weight));
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|b| {
            let offset = fnv1a(0x9e37_79b9, b.identity.as_bytes()) % m;
            let skip = fnv1a(0x85eb_ca6b, b.identity.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0u32;
    loop {
        for (i, b) in live.iter().enumerate() {
            let (offset, skip) = perms[i];
            for _ in 0..b.weight / common {
                // Skip slots already taken; a permutation visits every slot once.
                let slot = loop {
                    let c = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[c] == EMPTY {
                        break c;
                    }
                };
                table[slot] = b.id;
                filled += 1;
                if filled == size {
                    return Some(table);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn backends(n: u32) -> Vec<MaglevBackend> {
        (1..=n).map(|i| MaglevBackend { id: i, identity: format!("198.51.100.{i}:80"), weight: 1 }).collect()
    }

    fn shares(table: &[u32]) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        for id in table {
            *m.entry(*id).or_default() += 1;
        }
        m
    }

    fn moved(a: &[u32], b: &[u32]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn primes() {
        assert!(is_prime(DEFAULT_RING_SIZE));
        assert!(is_prime(251) && is_prime(2) && !is_prime(1) && !is_prime(65_536));
    }

    #[test]
    fn no_backends_no_table() {
        assert_eq!(build(&[], 251), None);
        let drained = vec![MaglevBackend { id: 1, identity: "a".into(), weight: 0 }];
        assert_eq!(build(&drained, 251), None);
    }

    #[test]
    fn every_slot_filled_and_even_without_weights() {
        let t = build(&backends(5), DEFAULT_RING_SIZE).expect("table");
        let s = shares(&t);
        assert_eq!(s.len(), 5);
        for (_, n) in s {
            let share = n as f64 / f64::from(DEFAULT_RING_SIZE);
            assert!((share - 0.2).abs() < 0.01, "share {share}");
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let mut b = backends(3);
        b[0].weight = 1;
        b[1].weight = 2;
        b[2].weight = 5;
        let t = build(&b, DEFAULT_RING_SIZE).expect("table");
        let s = shares(&t);
        for (id, w) in [(1, 1.0), (2, 2.0), (3, 5.0)] {
            let share = s[&id] as f64 / f64::from(DEFAULT_RING_SIZE);
            assert!((share - w / 8.0).abs() < 0.005, "backend {id}: share {share}");
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        let b = backends(4);
        let mut r = b.clone();
        r.reverse();
        assert_eq!(build(&b, 1009), build(&r, 1009));
    }

    #[test]
    fn adding_a_backend_moves_about_its_share() {
        let before = build(&backends(4), DEFAULT_RING_SIZE).expect("table");
        let after = build(&backends(5), DEFAULT_RING_SIZE).expect("table");
        let frac = moved(&before, &after) as f64 / f64::from(DEFAULT_RING_SIZE);
        // Ideal is 1/5 (the new backend's share); Maglev adds a little churn.
        assert!(frac > 0.19 && frac < 0.25, "moved {frac}");
    }

    #[test]
    fn removing_a_backend_moves_about_its_share() {
        let all = backends(5);
        let before = build(&all, DEFAULT_RING_SIZE).expect("table");
        let after = build(&all[..4], DEFAULT_RING_SIZE).expect("table");
        let frac = moved(&before, &after) as f64 / f64::from(DEFAULT_RING_SIZE);
        assert!(frac > 0.19 && frac < 0.25, "moved {frac}");
        // Every slot of the removed backend moved; few others did.
        let removed_slots = before.iter().filter(|id| **id == 5).count() as f64 / f64::from(DEFAULT_RING_SIZE);
        assert!(frac - removed_slots < 0.05, "extra churn {}", frac - removed_slots);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn table_is_full_and_only_uses_live_backends(weights in proptest::collection::vec(0u32..6, 1..8)) {
            let b: Vec<MaglevBackend> = weights.iter().enumerate()
                .map(|(i, w)| MaglevBackend { id: i as u32 + 1, identity: format!("id{i}"), weight: *w }).collect();
            match build(&b, 1009) {
                None => prop_assert!(weights.iter().all(|w| *w == 0)),
                Some(t) => {
                    prop_assert_eq!(t.len(), 1009);
                    for id in &t {
                        prop_assert!(b.iter().any(|x| x.id == *id && x.weight > 0));
                    }
                }
            }
        }
    }
}
