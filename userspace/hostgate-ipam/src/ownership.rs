//! Who answers for each customer IP in a cluster, and what one node does
//! about it. Pure: the daemon feeds it what the store shows (live members,
//! drained nodes, claims) and carries out the answer.
//!
//! The safety rule (no split brain): a node puts an address on its
//! interface only while it holds the IP's claim, a key bound to its own
//! membership lease. A claim is created only where none exists, so two
//! live claims of one IP cannot exist; a dead or cut-off node's claims
//! vanish with its lease, and it withdraws its addresses before that lease
//! can expire (the fencing in the daemon's membership loop).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    model::Assignment,
    placement::{place, Candidate},
};

/// A live member of the cluster (`members/<node>`, bound to its lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// Relative share of unpinned IPs.
    pub weight: u32,
    /// Seconds since the epoch when this lease joined.
    pub joined: u64,
}

/// A node's claim on an IP (`owners/<ip>`, bound to its lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub node: String,
    /// Seconds since the epoch of the claim.
    pub since: u64,
    /// The lease the claim is bound to (a restarted node re-binds its
    /// claims to its new lease).
    #[serde(default)]
    pub lease: i64,
}

/// The nodes that may own IPs: live members not drained, with their weights.
pub fn candidates<'a>(members: impl Iterator<Item = &'a Member>, drained: &[String]) -> Vec<Candidate> {
    members
        .filter(|m| !drained.contains(&m.node))
        .map(|m| Candidate { name: m.node.clone(), weight: f64::from(m.weight) })
        .collect()
}

/// The node that should answer for `a`: its pinned node while that node is
/// a candidate, else the weighted rendezvous choice among the candidates
/// (so a pinned IP fails over too, and comes back when its node does).
pub fn desired_owner<'a>(a: &Assignment, candidates: &'a [Candidate]) -> Option<&'a str> {
    if let Some(pinned) = &a.pinned_node {
        if let Some(c) = candidates.iter().find(|c| &c.name == pinned && c.weight > 0.0) {
            return Some(&c.name);
        }
    }
    place(a.addr, candidates)
}

/// What one node does about one IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it and it is ours: claim it, then add the address.
    Claim,
    /// Ours and claimed by us: keep the address.
    Hold,
    /// Ours, but another node still holds the claim: wait for it to let go.
    Wait,
    /// Not ours any more but claimed by us: remove the address, then the claim.
    Release,
    /// Neither ours nor claimed by us: the address must not be here.
    Absent,
}

/// The step for `addr` on node `me`, given the desired owner and the
/// current claim holder. A node that is not live (fenced) holds nothing.
pub fn step(me: &str, live: bool, desired: Option<&str>, claimed_by: Option<&str>) -> Step {
    let mine = claimed_by == Some(me);
    if !live {
        return if mine { Step::Release } else { Step::Absent };
    }
    match (desired == Some(me), claimed_by) {
        (true, None) => Step::Claim,
        (true, Some(_)) if mine => Step::Hold,
        (true, Some(_)) => Step::Wait,
        (false, _) if mine => Step::Release,
        (false, _) => Step::Absent,
    }
}

/// Whether the address belongs on the interface after `step` succeeded.
pub fn address_wanted(step: Step) -> bool {
    matches!(step, Step::Claim | Step::Hold)
}

/// Store keys of the cluster.
pub mod keys {
    use super::IpAddr;

    pub const MEMBERS: &str = "members/";
    pub const DRAINED: &str = "drained/";
    pub const CLAIMS: &str = "claims/";

    pub fn member(node: &str) -> String {
        format!("{MEMBERS}{node}")
    }
    pub fn drained(node: &str) -> String {
        format!("{DRAINED}{node}")
    }
    pub fn claim(addr: IpAddr) -> String {
        format!("{CLAIMS}{addr}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn member(node: &str) -> Member {
        Member { node: node.into(), weight: 100, joined: 0 }
    }

    fn assignment(last: u8, pinned: Option<&str>) -> Assignment {
        Assignment {
            addr: IpAddr::from([203, 0, 113, last]),
            customer: "acme".into(),
            pinned_node: pinned.map(Into::into),
            since: 0,
        }
    }

    #[test]
    fn pinned_ips_stay_while_their_node_lives() {
        let all = [member("a"), member("b"), member("c")];
        let live = candidates(all.iter(), &[]);
        assert_eq!(desired_owner(&assignment(1, Some("b")), &live), Some("b"));
        let without_b = candidates(all.iter().filter(|m| m.node != "b"), &[]);
        let fallback = desired_owner(&assignment(1, Some("b")), &without_b);
        assert!(matches!(fallback, Some("a" | "c")), "a pinned IP fails over: {fallback:?}");
        let drained = candidates(all.iter(), &["b".to_string()]);
        assert_ne!(desired_owner(&assignment(1, Some("b")), &drained), Some("b"), "draining moves pinned IPs too");
        assert_eq!(desired_owner(&assignment(1, None), &[]), None, "no live node: unplaced");
    }

    #[test]
    fn steps() {
        assert_eq!(step("a", true, Some("a"), None), Step::Claim);
        assert_eq!(step("a", true, Some("a"), Some("a")), Step::Hold);
        assert_eq!(step("a", true, Some("a"), Some("b")), Step::Wait);
        assert_eq!(step("a", true, Some("b"), Some("a")), Step::Release);
        assert_eq!(step("a", true, Some("b"), Some("b")), Step::Absent);
        assert_eq!(step("a", true, None, None), Step::Absent);
        assert_eq!(step("a", false, Some("a"), Some("a")), Step::Release, "fenced: let go");
        assert_eq!(step("a", false, Some("a"), None), Step::Absent, "fenced: claim nothing");
    }

    /// Runs turns against one shared claim table: each turn one node acts
    /// on its own view of who should own each IP (views may disagree while
    /// changes propagate). Returns the claims; panics if two nodes ever hold
    /// one address at the same time.
    fn run(turns: &[(usize, Vec<usize>)]) -> BTreeMap<usize, usize> {
        let nodes = ["a", "b", "c"];
        let mut claims: BTreeMap<usize, usize> = BTreeMap::new();
        let mut holding: BTreeMap<(usize, usize), bool> = BTreeMap::new();
        for (node, view) in turns {
            for (ip, owner) in view.iter().enumerate() {
                let claimed_by = claims.get(&ip).map(|n| nodes[*n]);
                let s = step(nodes[*node], true, Some(nodes[*owner]), claimed_by);
                match s {
                    Step::Claim => {
                        claims.insert(ip, *node);
                    }
                    Step::Release => {
                        claims.remove(&ip);
                    }
                    _ => {}
                }
                holding.insert((*node, ip), address_wanted(s));
                let holders = holding.iter().filter(|((_, i), h)| *i == ip && **h).count();
                assert!(holders <= 1, "two nodes hold IP {ip}");
            }
        }
        claims
    }

    proptest! {
        /// Disagreeing views never make two holders; once views agree, a
        /// few rounds put every IP on its desired owner.
        #[test]
        fn one_holder_and_convergence(
            turns in proptest::collection::vec((0usize..3, proptest::collection::vec(0usize..3, 4)), 0..30),
            agreed in proptest::collection::vec(0usize..3, 4),
        ) {
            let mut all = turns;
            for _ in 0..2 {
                for node in 0..3 {
                    all.push((node, agreed.clone()));
                }
            }
            let claims = run(&all);
            for (ip, owner) in agreed.iter().enumerate() {
                prop_assert_eq!(claims.get(&ip), Some(owner));
            }
        }
    }
}
