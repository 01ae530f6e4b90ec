//! What a ruleset means: first match wins, else the default. The reference
//! the compiled tables are tested against.

use std::net::IpAddr;

use serde::Serialize;

use crate::ast::{Action, Direction, Rule, Ruleset};

/// The parts of a packet the rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub direction: Direction,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port (TCP/UDP).
    pub port: u16,
    /// ICMP type (ICMP/ICMPv6).
    pub icmp_type: u8,
}

/// Which rule decided, and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Decision {
    /// Index into `Ruleset::rules`; `None` for the default.
    pub rule: Option<usize>,
    pub action: Action,
}

pub fn matches(rule: &Rule, p: &Packet) -> bool {
    rule.direction == p.direction
        && rule.proto.is_none_or(|pr| pr.number() == p.proto)
        && (rule.from.is_empty() || rule.from.iter().any(|c| c.contains(p.src)))
        && (rule.to.is_empty() || rule.to.iter().any(|c| c.contains(p.dst)))
        && (rule.ports.is_empty() || rule.ports.iter().any(|(a, b)| (*a..=*b).contains(&p.port)))
        && rule.icmp_type.is_none_or(|t| t == p.icmp_type)
}

/// What traffic no rule matches gets: the file's `default` for incoming
/// traffic; outgoing traffic is allowed (until stateful egress policy can
/// tell replies from new connections, a default-deny egress would cut the
/// containers' answers to direct connections).
pub fn default_action(rs: &Ruleset, direction: Direction) -> Action {
    match direction {
        Direction::In => rs.default,
        Direction::Out => Action::Allow,
    }
}

/// The first matching rule's action, else the default.
pub fn evaluate(rs: &Ruleset, p: &Packet) -> Decision {
    match rs.rules.iter().position(|r| matches(r, p)) {
        Some(i) => Decision { rule: Some(i), action: rs.rules[i].action },
        None => Decision { rule: None, action: default_action(rs, p.direction) },
    }
}
