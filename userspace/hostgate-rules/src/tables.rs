//! Every customer's compiled rules merged into the tables the kernel holds,
//! with node-wide rule ids (so counters name a file and line).

use std::net::IpAddr;

use hostgate_ipam::model::Cidr;
use serde::Serialize;

use crate::{
    ast::{Action, Direction, Ruleset},
    compile::{compile, CompileError, PolicyKey},
};

/// What a rule id stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RuleRef {
    pub customer: String,
    pub file: String,
    pub direction: Direction,
    /// `None`: what unmatched traffic of this direction gets.
    pub line: Option<u32>,
    pub action: Action,
}

/// The kernel's firewall tables for all customers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub policy: Vec<(PolicyKey, u32)>,
    /// (group, source prefix, rule id, action)
    pub sources: Vec<(u32, Cidr, u32, Action)>,
    /// Indexed by rule id.
    pub rules: Vec<RuleRef>,
    /// Incoming groups whose customer also has outgoing rules: allowed
    /// conversations must be remembered so the answers pass those.
    pub track_inbound: std::collections::BTreeSet<u32>,
}

/// What one customer's rules guard: incoming rules its IPs and its
/// containers' addresses (traffic to them from the network); outgoing
/// rules its containers' addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guarded {
    pub customer_ips: Vec<IpAddr>,
    pub container_addrs: Vec<IpAddr>,
}

/// Merges rulesets into one set of tables.
pub fn build(rulesets: &[(Ruleset, Guarded)]) -> Result<Tables, CompileError> {
    let mut t = Tables::default();
    let mut group_base = 0u32;
    for (rs, guarded) in rulesets {
        let id_base = t.rules.len() as u32;
        t.rules.extend(rs.rules.iter().map(|r| RuleRef {
            customer: rs.customer.clone(),
            file: rs.file.clone(),
            direction: r.direction,
            line: Some(r.line),
            action: r.action,
        }));
        let default_ids = [Direction::In, Direction::Out].map(|direction| {
            t.rules.push(RuleRef {
                customer: rs.customer.clone(),
                file: rs.file.clone(),
                direction,
                line: None,
                action: crate::eval::default_action(rs, direction),
            });
            t.rules.len() as u32 - 1
        });
        let incoming: Vec<IpAddr> = guarded.customer_ips.iter().chain(&guarded.container_addrs).copied().collect();
        for (direction, locals) in [(Direction::In, &incoming), (Direction::Out, &guarded.container_addrs)] {
            if direction == Direction::Out && !rs.rules.iter().any(|r| r.direction == Direction::Out) {
                continue; // nothing to enforce: unmatched egress is allowed anyway
            }
            let c = compile(rs, direction, locals)?;
            let default = default_ids[usize::from(direction == Direction::Out)];
            if direction == Direction::In && rs.rules.iter().any(|r| r.direction == Direction::Out) {
                t.track_inbound.extend((0..c.groups).map(|g| group_base + g));
            }
            t.policy.extend(c.policy.iter().map(|(k, g)| (*k, group_base + g)));
            t.sources.extend(c.lpm.iter().map(|((g, prefix), d)| {
                let id = d.rule.map_or(default, |i| id_base + i as u32);
                (group_base + g, *prefix, id, d.action)
            }));
            group_base += c.groups;
        }
    }
    Ok(t)
}

/// Carries each rule's running total across a re-apply: the new rule ids'
/// starting values, taken from the old rule with the same identity
/// (customer, file, line, direction, action; duplicates paired in order).
/// A rule that moved to another line or changed starts at zero rather
/// than inherit another rule's count.
pub fn carry_over<T: Copy + Default>(old: &[RuleRef], old_totals: &[T], new: &[RuleRef]) -> Vec<T> {
    let mut unused: std::collections::HashMap<&RuleRef, std::collections::VecDeque<T>> =
        std::collections::HashMap::new();
    for (rule, total) in old.iter().zip(old_totals) {
        unused.entry(rule).or_default().push_back(*total);
    }
    new.iter().map(|rule| unused.get_mut(rule).and_then(|q| q.pop_front()).unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_unchanged_rules_only() {
        let rule = |file: &str, line: u32, action: Action| RuleRef {
            customer: "acme".into(),
            file: file.into(),
            direction: Direction::In,
            line: Some(line),
            action,
        };
        let old = [rule("a", 1, Action::Allow), rule("a", 2, Action::Drop), rule("a", 2, Action::Drop)];
        // one rule inserted at the front, the duplicate pair kept, one new
        let new = [
            rule("a", 9, Action::Allow),
            rule("a", 2, Action::Drop),
            rule("a", 1, Action::Allow),
            rule("a", 2, Action::Drop),
            rule("a", 2, Action::Drop),
        ];
        assert_eq!(carry_over(&old, &[10u64, 20, 30], &new), vec![0, 20, 10, 30, 0]);
        assert_eq!(carry_over(&old, &[10u64, 20, 30], &[]), Vec::<u64>::new());
    }
    use crate::parse::parse;

    #[test]
    fn ids_and_groups_do_not_collide() {
        let (a, _) = parse("a.rules", "customer a\ndefault drop\nallow tcp port 80\n").expect("a");
        let (b, _) = parse("b.rules", "customer b\ndefault allow\ndrop udp\n").expect("b");
        let g = |ip: &str| Guarded { customer_ips: vec![ip.parse().expect("ip")], container_addrs: vec![] };
        let t = build(&[(a, g("203.0.113.10")), (b, g("203.0.113.20"))]).expect("build");
        assert_eq!(t.rules.len(), 6, "one rule and two defaults each");
        assert_eq!((t.rules[1].line, t.rules[2].line, t.rules[4].line), (None, None, None));
        let groups_a: Vec<u32> =
            t.policy.iter().filter(|(k, _)| k.local.to_string() == "203.0.113.10").map(|(_, g)| *g).collect();
        let groups_b: Vec<u32> =
            t.policy.iter().filter(|(k, _)| k.local.to_string() == "203.0.113.20").map(|(_, g)| *g).collect();
        assert!(groups_a.iter().all(|g| !groups_b.contains(g)));
        // b's incoming default (allow) is rule id 4 and is what b's unmatched traffic gets.
        assert!(t
            .sources
            .iter()
            .any(|(g, _, id, action)| groups_b.contains(g) && *id == 4 && *action == Action::Allow));
    }
}
