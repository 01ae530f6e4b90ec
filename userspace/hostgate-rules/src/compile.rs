//! Compiles a customer's ingress rules into two tables the XDP program can
//! consult at a cost that does not grow with the number of rules:
//!
//! 1. a hash from (customer IP, protocol, port or ICMP type) to a *group*:
//!    the ordered rules that can apply to such packets, tried as
//!    (ip, proto, port), then (ip, proto, any), then (ip, any, any);
//! 2. a longest-prefix-match table from (group, source address) to the
//!    decision. First-match order becomes longest-prefix order because,
//!    for the addresses whose longest listed prefix is P, the rules that
//!    match are exactly those whose source sets contain all of P: the
//!    decision stored for P is the first of them.
//!
//! Identical groups are shared; [`lookup`] mirrors the kernel's walk and is
//! held to [`crate::eval::evaluate`] by a property test.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use hostgate_ipam::model::Cidr;

use crate::{
    ast::{Direction, Rule, Ruleset},
    eval::{Decision, Packet},
};

/// Refuse to expand port ranges into more table entries than this.
pub const MAX_POLICY_ENTRIES: usize = 1 << 20;

/// (guarded address, protocol, destination port/ICMP type + 1); 0 means
/// any. The guarded address is a customer IP (the destination) for `in`
/// rules, a container address (the source) for `out` rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub direction: Direction,
    pub local: IpAddr,
    pub proto: u8,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub direction: Direction,
    pub policy: BTreeMap<PolicyKey, u32>,
    /// (group, source prefix) -> decision.
    pub lpm: BTreeMap<(u32, Cidr), Decision>,
    pub groups: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{file}: the rules expand to more than {MAX_POLICY_ENTRIES} table entries (narrow the port ranges)")]
    TooLarge { file: String },
}

fn wildcard(family_v4: bool) -> Cidr {
    if family_v4 {
        Cidr { addr: IpAddr::from([0u8; 4]), len: 0 }
    } else {
        Cidr { addr: IpAddr::from([0u8; 16]), len: 0 }
    }
}

/// The port key of a packet: its port (TCP/UDP), ICMP type + 1, else 0.
fn port_key(proto: u8, port: u16, icmp_type: u8) -> u16 {
    match proto {
        6 | 17 => port,
        1 | 58 => u16::from(icmp_type) + 1,
        _ => 0,
    }
}

/// Whether rule `r` can match packets with (`proto`, `key`) where key 0
/// stands for "a port (or type) no rule names".
fn applies(r: &Rule, proto: u8, key: u16) -> bool {
    match r.proto {
        None => true,
        Some(p) if p.number() != proto => false,
        Some(p) if p.has_ports() => {
            r.ports.is_empty() || (key != 0 && r.ports.iter().any(|(a, b)| (*a..=*b).contains(&key)))
        }
        Some(_) => r.icmp_type.is_none() || (key != 0 && r.icmp_type.map(|t| u16::from(t) + 1) == Some(key)),
    }
}

/// The addresses a rule guards on this side (customer IPs for `in`,
/// container sources for `out`) and the far side it matches by prefix.
fn sides(r: &Rule) -> (&[Cidr], &[Cidr]) {
    match r.direction {
        Direction::In => (&r.to, &r.from),
        Direction::Out => (&r.from, &r.to),
    }
}

/// Compiles the rules of `rs` in `direction` for the guarded addresses
/// `locals`: the customer's IPs (`in`) or its containers' addresses (`out`).
pub fn compile(rs: &Ruleset, direction: Direction, locals: &[IpAddr]) -> Result<Compiled, CompileError> {
    let ingress: Vec<(usize, &Rule)> = rs.rules.iter().enumerate().filter(|(_, r)| r.direction == direction).collect();
    let mut out = Compiled { direction, policy: BTreeMap::new(), lpm: BTreeMap::new(), groups: 0 };
    let mut group_ids: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    for &dst in locals {
        let relevant: Vec<(usize, &Rule)> = ingress
            .iter()
            .copied()
            .filter(|(_, r)| sides(r).0.is_empty() || sides(r).0.iter().any(|c| c.contains(dst)))
            .collect();
        // Every (proto, key) some rule singles out, plus (proto, any) and (any, any).
        let mut keys: BTreeSet<(u8, u16)> = BTreeSet::from([(0, 0)]);
        for (_, r) in &relevant {
            let Some(p) = r.proto else { continue };
            keys.insert((p.number(), 0));
            if p.has_ports() {
                for (a, b) in &r.ports {
                    keys.extend((*a..=*b).map(|port| (p.number(), port)));
                }
            } else if let Some(t) = r.icmp_type {
                keys.insert((p.number(), u16::from(t) + 1));
            }
            if out.policy.len() + keys.len() > MAX_POLICY_ENTRIES {
                return Err(CompileError::TooLarge { file: rs.file.clone() });
            }
        }
        for (proto, key) in keys {
            let members: Vec<usize> = relevant
                .iter()
                .filter(|(_, r)| if proto == 0 { r.proto.is_none() } else { applies(r, proto, key) })
                .map(|(i, _)| *i)
                .collect();
            let next = group_ids.len() as u32;
            let group = *group_ids.entry(members.clone()).or_insert_with(|| {
                for (prefix, decision) in decide(rs, direction, &members) {
                    out.lpm.insert((next, prefix), decision);
                }
                next
            });
            out.policy.insert(PolicyKey { direction, local: dst, proto, port: key }, group);
        }
    }
    out.groups = group_ids.len() as u32;
    Ok(out)
}

/// The prefix of `c`'s address `len` bits long.
fn truncate(c: &Cidr, len: u8) -> Cidr {
    let addr = match c.addr {
        IpAddr::V4(a) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    };
    Cidr { addr, len }
}

/// For a group (rule indices in order): the decision for each listed prefix.
/// A prefix gets the first rule with a source set containing it: looked up
/// over its ancestors (at most 129), so the cost is linear in the rules.
fn decide(rs: &Ruleset, direction: Direction, members: &[usize]) -> Vec<(Cidr, Decision)> {
    let mut prefixes: BTreeSet<Cidr> = BTreeSet::from([wildcard(true), wildcard(false)]);
    let mut first_with: std::collections::HashMap<Cidr, usize> = std::collections::HashMap::new();
    let mut first_any: Option<usize> = None;
    for &i in members {
        let from = sides(&rs.rules[i]).1;
        if from.is_empty() {
            first_any.get_or_insert(i);
        }
        for c in from {
            prefixes.insert(*c);
            first_with.entry(*c).or_insert(i);
        }
    }
    prefixes
        .into_iter()
        .map(|p| {
            let first =
                (0..=p.len).filter_map(|len| first_with.get(&truncate(&p, len)).copied()).chain(first_any).min();
            let decision = match first {
                Some(i) => Decision { rule: Some(i), action: rs.rules[i].action },
                None => Decision { rule: None, action: crate::eval::default_action(rs, direction) },
            };
            (p, decision)
        })
        .collect()
}

/// The kernel's walk over the compiled tables, for tests. `None` when the
/// packet's guarded address is not one of the compiled ones.
pub fn lookup(c: &Compiled, p: &Packet) -> Option<Decision> {
    let key = port_key(p.proto, p.port, p.icmp_type);
    let (local, far) = match c.direction {
        Direction::In => (p.dst, p.src),
        Direction::Out => (p.src, p.dst),
    };
    let group = [(p.proto, key), (p.proto, 0), (0, 0)].iter().find_map(|(proto, port)| {
        c.policy.get(&PolicyKey { direction: c.direction, local, proto: *proto, port: *port })
    })?;
    c.lpm
        .iter()
        .filter(|((g, prefix), _)| g == group && prefix.contains(far) && prefix.addr.is_ipv4() == far.is_ipv4())
        .max_by_key(|((_, prefix), _)| prefix.len)
        .map(|(_, d)| *d)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{ast::Action, eval::evaluate, parse};

    const IPS: [&str; 2] = ["203.0.113.10", "203.0.113.11"];

    fn ips() -> Vec<IpAddr> {
        IPS.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn first_match_beats_longer_prefixes() {
        let (rs, _) = parse::parse(
            "t",
            "customer a\ndefault drop\nallow tcp from 198.51.0.0/16\ndrop tcp from 198.51.100.0/24\nreject udp port 53 to 203.0.113.11\n",
        )
        .expect("valid");
        let c = compile(&rs, Direction::In, &ips()).expect("compile");
        let pkt = |src: &str, dst: &str, proto: u8, port: u16| Packet {
            direction: Direction::In,
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            proto,
            port,
            icmp_type: 0,
        };
        // 198.51.100.7 matches both; the /16 rule comes first.
        let d = lookup(&c, &pkt("198.51.100.7", "203.0.113.10", 6, 80)).expect("guarded");
        assert_eq!(d, Decision { rule: Some(0), action: Action::Allow });
        let d = lookup(&c, &pkt("198.18.5.1", "203.0.113.10", 6, 80)).expect("guarded");
        assert_eq!(d, Decision { rule: None, action: Action::Drop });
        let d = lookup(&c, &pkt("198.18.5.1", "203.0.113.11", 17, 53)).expect("guarded");
        assert_eq!(d.action, Action::Reject);
        assert_eq!(lookup(&c, &pkt("198.18.5.1", "203.0.113.10", 17, 53)).expect("guarded").action, Action::Drop);
        assert_eq!(lookup(&c, &pkt("198.18.5.1", "203.0.113.99", 17, 53)), None, "not a customer IP");
    }

    #[test]
    fn groups_are_shared() {
        let (rs, _) = parse::parse("t", "customer a\ndefault drop\nallow tcp port 80\n").expect("valid");
        let c = compile(&rs, Direction::In, &ips()).expect("compile");
        assert_eq!(c.policy.len(), 6, "3 keys per IP");
        assert_eq!(c.groups, 2, "no rule (any proto, or tcp to another port) and tcp 80: shared by both IPs");
    }

    fn arb_rule() -> impl Strategy<Value = String> {
        let action = prop_oneof![Just("allow"), Just("drop"), Just("reject")];
        let proto = prop_oneof![Just(""), Just("tcp"), Just("udp"), Just("icmp")];
        let from = prop_oneof![
            Just(""),
            Just("from 198.51.0.0/16"),
            Just("from 198.51.100.0/24"),
            Just("from 198.51.100.128/25, 198.18.5.0/24"),
            Just("from 2001:db8::/32"),
        ];
        let to = prop_oneof![Just(""), Just("to 203.0.113.10"), Just("to 203.0.113.11")];
        let port = prop_oneof![Just(""), Just("port 22"), Just("port 80, 443"), Just("port 1000-1010")];
        let ty = prop_oneof![Just(""), Just("type echo-request"), Just("type 3")];
        (action, proto, from, to, port, ty).prop_map(|(a, p, f, t, po, ty)| {
            let po = if p == "tcp" || p == "udp" { po } else { "" };
            let ty = if p == "icmp" { ty } else { "" };
            format!("{a} {p} {f} {t} {po} {ty}")
        })
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let src = prop_oneof![
            Just("198.51.100.200"),
            Just("198.51.100.5"),
            Just("198.51.7.7"),
            Just("198.18.5.9"),
            Just("203.0.113.50"),
            Just("2001:db8::1"),
            Just("2001:db9::1"),
        ];
        let dst = prop_oneof![Just("203.0.113.10"), Just("203.0.113.11")];
        let proto = prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(47)];
        let port = prop_oneof![Just(22u16), Just(80), Just(443), Just(1005), Just(9999)];
        let ty = prop_oneof![Just(8u8), Just(3), Just(0)];
        (src, dst, proto, port, ty).prop_map(|(s, d, proto, port, icmp_type)| Packet {
            direction: Direction::In,
            src: s.parse().expect("ip"),
            dst: d.parse().expect("ip"),
            proto,
            port,
            icmp_type,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The same for egress: guarded by container source, matched by destination prefix.
        #[test]
        fn compiled_equals_first_match_out(rules in proptest::collection::vec(arb_rule(), 0..12),
                                           packets in proptest::collection::vec(arb_packet(), 1..40)) {
            // Reuse the generators with the roles swapped: `to` names prefixes, `from` the containers.
            let text = format!(
                "customer a\ndefault drop\n{}\n",
                rules
                    .iter()
                    .map(|r| format!("{} ", r).replace(" to ", " FROMX ").replace(" from ", " to ").replace(" FROMX ", " from ").replacen(' ', " out ", 1))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            let (rs, _) = parse::parse("p", &text).expect("generated rules parse");
            let c = compile(&rs, Direction::Out, &ips()).expect("compile");
            for p in packets {
                let p = Packet { direction: Direction::Out, src: p.dst, dst: p.src, ..p };
                prop_assert_eq!(lookup(&c, &p), Some(evaluate(&rs, &p)), "packet {:?}\n{}", p, text);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// The compiled tables decide exactly as first-match evaluation.
        #[test]
        fn compiled_equals_first_match(rules in proptest::collection::vec(arb_rule(), 0..12),
                                       default in prop_oneof![Just("allow"), Just("drop")],
                                       packets in proptest::collection::vec(arb_packet(), 1..40)) {
            let text = format!("customer a\ndefault {default}\n{}\n", rules.join("\n"));
            let (rs, _) = parse::parse("p", &text).expect("generated rules parse");
            let c = compile(&rs, Direction::In, &ips()).expect("compile");
            for p in packets {
                prop_assert_eq!(lookup(&c, &p), Some(evaluate(&rs, &p)), "packet {:?}\n{}", p, text);
            }
        }
    }
}
