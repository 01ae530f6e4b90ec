//! What a rules file says, with where it says it.

use std::fmt;

use hostgate_ipam::model::Cidr;
use serde::Serialize;

/// What happens to a matching packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Drop,
    /// Drop, and tell the sender (TCP RST / ICMP unreachable).
    Reject,
    /// Allow up to `rate` packets/s per source with bursts of `burst`; drop the rest.
    RateLimit {
        rate: u32,
        burst: u32,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow => f.write_str("allow"),
            Action::Drop => f.write_str("drop"),
            Action::Reject => f.write_str("reject"),
            Action::RateLimit { rate, burst } => write!(f, "rate-limit {rate}/s burst {burst}"),
        }
    }
}

/// Transport protocol a rule is narrowed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::Icmp | Proto::Icmpv6)
    }
}

/// Traffic direction relative to the customer's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the customer's IPs (enforced in XDP on the uplink).
    In,
    /// From the customer's containers (enforced in TC on their veths).
    Out,
}

/// One rule, in file order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub line: u32,
    pub direction: Direction,
    pub action: Action,
    /// `None`: any protocol.
    pub proto: Option<Proto>,
    /// Source prefixes; empty: any source.
    pub from: Vec<Cidr>,
    /// Destinations: for `in` rules the customer IPs guarded (host
    /// addresses), for `out` rules any prefixes; empty: all.
    pub to: Vec<Cidr>,
    /// Inclusive port ranges (TCP/UDP); empty: any port.
    pub ports: Vec<(u16, u16)>,
    /// ICMP type (ICMP/ICMPv6 rules); `None`: any type.
    pub icmp_type: Option<u8>,
    /// The rule's own comment, if any (`# ...` at the end of its line).
    pub comment: String,
}

impl fmt::Display for Rule {
    /// The rule in its canonical form (sets expanded), e.g.
    /// `allow in tcp from 198.51.100.0/24 port 22`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            Direction::In => "in",
            Direction::Out => "out",
        };
        write!(f, "{} {dir}", self.action)?;
        if let Some(p) = self.proto {
            let name = match p {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
                Proto::Icmp => "icmp",
                Proto::Icmpv6 => "icmpv6",
            };
            write!(f, " {name}")?;
        }
        let join = |v: Vec<String>| v.join(", ");
        if !self.from.is_empty() {
            write!(f, " from {}", join(self.from.iter().map(ToString::to_string).collect()))?;
        }
        if !self.to.is_empty() {
            write!(f, " to {}", join(self.to.iter().map(ToString::to_string).collect()))?;
        }
        if !self.ports.is_empty() {
            let ports =
                self.ports.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
            write!(f, " port {}", join(ports))?;
        }
        if let Some(t) = self.icmp_type {
            write!(f, " type {t}")?;
        }
        Ok(())
    }
}

/// A parsed rules file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    pub file: String,
    pub customer: String,
    pub customer_line: u32,
    /// What happens to traffic to the customer's IPs that no rule matches.
    pub default: Action,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A problem found in a rules file, located to the column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {sev}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}
