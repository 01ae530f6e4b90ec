//! Every customer's compiled rules merged into the tables the kernel holds,
//! with node-wide rule ids (so counters name a file and line).

use std::net::IpAddr;

use hostgate_ipam::model::Cidr;
use serde::Serialize;

use crate::{
    ast::{Action, Ruleset},
    compile::{compile, CompileError, PolicyKey},
};

/// What a rule id stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub customer: String,
    pub file: String,
    /// `None`: the file's `default`.
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
}

/// Merges rulesets (each with its customer's IPs) into one set of tables.
pub fn build(rulesets: &[(Ruleset, Vec<IpAddr>)]) -> Result<Tables, CompileError> {
    let mut t = Tables::default();
    let mut group_base = 0u32;
    for (rs, ips) in rulesets {
        let c = compile(rs, ips)?;
        let id_base = t.rules.len() as u32;
        t.rules.extend(rs.rules.iter().map(|r| RuleRef {
            customer: rs.customer.clone(),
            file: rs.file.clone(),
            line: Some(r.line),
            action: r.action,
        }));
        let default_id = t.rules.len() as u32;
        t.rules.push(RuleRef { customer: rs.customer.clone(), file: rs.file.clone(), line: None, action: rs.default });
        t.policy.extend(c.policy.iter().map(|(k, g)| (*k, group_base + g)));
        t.sources.extend(c.lpm.iter().map(|((g, prefix), d)| {
            let id = d.rule.map_or(default_id, |i| id_base + i as u32);
            (group_base + g, *prefix, id, d.action)
        }));
        group_base += c.groups;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    #[test]
    fn ids_and_groups_do_not_collide() {
        let (a, _) = parse("a.rules", "customer a\ndefault drop\nallow tcp port 80\n").expect("a");
        let (b, _) = parse("b.rules", "customer b\ndefault allow\ndrop udp\n").expect("b");
        let t =
            build(&[(a, vec!["203.0.113.10".parse().expect("ip")]), (b, vec!["203.0.113.20".parse().expect("ip")])])
                .expect("build");
        assert_eq!(t.rules.len(), 4, "one rule and a default each");
        assert_eq!((t.rules[1].line, t.rules[3].line), (None, None));
        let groups_a: Vec<u32> =
            t.policy.iter().filter(|(k, _)| k.dst.to_string() == "203.0.113.10").map(|(_, g)| *g).collect();
        let groups_b: Vec<u32> =
            t.policy.iter().filter(|(k, _)| k.dst.to_string() == "203.0.113.20").map(|(_, g)| *g).collect();
        assert!(groups_a.iter().all(|g| !groups_b.contains(g)));
        // b's default allow is rule id 3 and is what b's unmatched traffic gets.
        assert!(t
            .sources
            .iter()
            .any(|(g, _, id, action)| groups_b.contains(g) && *id == 3 && *action == Action::Allow));
    }
}
