//! Which node answers for an unpinned IP: weighted rendezvous (highest
//! random weight) hashing over the healthy nodes. Every node computes the
//! same answer from the same membership, and a node joining or leaving
//! moves only the IPs it wins or held.

use std::net::IpAddr;

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    /// Relative capacity; 0 takes nothing (drained).
    pub weight: f64,
}

/// Stable 64-bit hash (FNV-1a, then a MurmurHash3 finaliser).
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The node that should own `addr`, or `None` if no node can.
pub fn place(addr: IpAddr, nodes: &[Candidate]) -> Option<&str> {
    let key = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    nodes
        .iter()
        .filter(|n| n.weight > 0.0)
        .map(|n| {
            // Weighted rendezvous: score = -w / ln(u), u uniform in (0, 1).
            let u = (hash(&[&key, n.name.as_bytes()]) >> 11) as f64 / (1u64 << 53) as f64;
            let u = u.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
            (-n.weight / u.ln(), n.name.as_str())
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn nodes(names: &[&str]) -> Vec<Candidate> {
        names.iter().map(|n| Candidate { name: n.to_string(), weight: 1.0 }).collect()
    }

    fn addrs(n: u32) -> Vec<IpAddr> {
        (0..n).map(|i| IpAddr::from((0xcb00_7100u32 + i).to_be_bytes())).collect()
    }

    #[test]
    fn spreads_evenly_and_by_weight() {
        let mut ns = nodes(&["a", "b", "c"]);
        ns[2].weight = 2.0;
        let mut count: HashMap<&str, usize> = HashMap::new();
        for a in addrs(8000) {
            *count.entry(place(a, &ns).expect("node")).or_default() += 1;
        }
        for (n, share) in [("a", 0.25), ("b", 0.25), ("c", 0.5)] {
            let got = count[n] as f64 / 8000.0;
            assert!((got - share).abs() < 0.03, "{n}: {got}");
        }
    }

    #[test]
    fn leaving_node_moves_only_its_ips() {
        let all = nodes(&["a", "b", "c", "d"]);
        let three = nodes(&["a", "b", "c"]);
        for a in addrs(2000) {
            let before = place(a, &all).expect("node");
            let after = place(a, &three).expect("node");
            if before != "d" {
                assert_eq!(before, after, "{a} moved though its node stayed");
            }
        }
    }

    #[test]
    fn nobody_to_place_on() {
        assert_eq!(place("203.0.113.1".parse().expect("ip"), &[]), None);
        let drained = vec![Candidate { name: "a".into(), weight: 0.0 }];
        assert_eq!(place("203.0.113.1".parse().expect("ip"), &drained), None);
    }

    proptest! {
        #[test]
        fn joining_node_takes_only_what_it_wins(ip: u32, extra in "[a-z]{1,8}") {
            let base = nodes(&["n1", "n2", "n3"]);
            prop_assume!(!base.iter().any(|n| n.name == extra));
            let mut grown = base.clone();
            grown.push(Candidate { name: extra.clone(), weight: 1.0 });
            let a = IpAddr::from(ip.to_be_bytes());
            let after = place(a, &grown).expect("node");
            if after != extra {
                prop_assert_eq!(after, place(a, &base).expect("node"));
            }
        }
    }
}
