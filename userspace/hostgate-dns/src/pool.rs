//! Health-aware answers (issue #9 point 5): a name bound to a load
//! balancer VIP answers the addresses of the VIP's backends whose health
//! checks pass, the checks that steer the load balancer (one probe per
//! backend however many names use it, running from when the backend is
//! declared: the daemon's checker, not ours). When none passes, the
//! pool's fallback: every backend, none, or a sorry address.
//!
//! "None" still has to leave the name in the zone, or the answer would be
//! NXDOMAIN, which resolvers cache for the whole name: the name keeps a
//! TXT record saying why, and A/AAAA get NODATA.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record};

/// TTL of pool answers unless given: a resolver should not hold on to a
/// backend for longer than the check takes to drop it.
pub const DEFAULT_TTL: u32 = 10;
/// Text of the record that keeps an empty pool's name in the zone.
pub const EMPTY_TEXT: &str = "hostgate: no healthy backend";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Every backend, as if all were healthy (clients try them all).
    All,
    /// No address (NODATA).
    None,
    /// One address, e.g. a maintenance page.
    Sorry(IpAddr),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("fallback: {0:?} is not all, none or an IP address")]
pub struct FallbackError(String);

impl FromStr for Fallback {
    type Err = FallbackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Fallback::All),
            "none" => Ok(Fallback::None),
            other => IpAddr::from_str(other).map(Fallback::Sorry).map_err(|_| FallbackError(s.to_string())),
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::All => f.write_str("all"),
            Fallback::None => f.write_str("none"),
            Fallback::Sorry(ip) => write!(f, "{ip}"),
        }
    }
}

/// A backend of the pool's VIP and whether its check passes (an unchecked
/// backend passes, as it does for the load balancer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: IpAddr,
    pub healthy: bool,
}

/// The addresses to answer: the healthy ones, else the fallback's;
/// sorted, without duplicates (two ports of one address are one answer).
pub fn addresses(targets: &[Target], fallback: &Fallback) -> Vec<IpAddr> {
    let mut healthy: Vec<IpAddr> = targets.iter().filter(|t| t.healthy).map(|t| t.addr).collect();
    if healthy.is_empty() {
        healthy = match fallback {
            Fallback::All => targets.iter().map(|t| t.addr).collect(),
            Fallback::None => Vec::new(),
            Fallback::Sorry(ip) => vec![*ip],
        };
    }
    healthy.sort();
    healthy.dedup();
    healthy
}

/// The records of the pool's name: A/AAAA for `addrs`, or the TXT that
/// keeps the name when there is none.
pub fn records(owner: &Name, ttl: u32, addrs: &[IpAddr]) -> Vec<Record> {
    let record = |data| {
        let mut r = Record::from_rdata(owner.clone(), ttl, data);
        r.dns_class = DNSClass::IN;
        r
    };
    if addrs.is_empty() {
        return vec![record(RData::TXT(TXT::new(vec![EMPTY_TEXT.to_string()])))];
    }
    addrs
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => record(RData::A(A(*v4))),
            IpAddr::V6(v6) => record(RData::AAAA(AAAA(*v6))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(addr: &str, healthy: bool) -> Target {
        Target { addr: addr.parse().unwrap(), healthy }
    }

    #[test]
    fn healthy_first_then_the_fallback() {
        let targets = [t("198.51.100.6", true), t("198.51.100.10", false), t("198.51.100.6", true)];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(addresses(&targets, &Fallback::None), [ip("198.51.100.6")]);
        let down = [t("198.51.100.6", false), t("198.51.100.10", false)];
        assert_eq!(addresses(&down, &Fallback::All), [ip("198.51.100.6"), ip("198.51.100.10")]);
        assert!(addresses(&down, &Fallback::None).is_empty());
        let sorry = Fallback::from_str("203.0.113.99").unwrap();
        assert_eq!(addresses(&down, &sorry), [ip("203.0.113.99")]);
        assert!(addresses(&[], &Fallback::All).is_empty(), "no backend at all");
        assert_eq!(Fallback::from_str(" ALL ").unwrap(), Fallback::All);
        assert!(Fallback::from_str("some").unwrap_err().to_string().starts_with("fallback:"));
        assert_eq!(sorry.to_string(), "203.0.113.99");
    }

    #[test]
    fn records_keep_the_name() {
        let owner = Name::from_str("www.example.com.").unwrap();
        let rs = records(&owner, 10, &["198.51.100.6".parse().unwrap(), "2001:db8::6".parse().unwrap()]);
        let types: Vec<_> = rs.iter().map(|r| r.record_type().to_string()).collect();
        assert_eq!(types, ["A", "AAAA"]);
        assert!(rs.iter().all(|r| r.ttl == 10));
        let empty = records(&owner, 10, &[]);
        assert_eq!(empty[0].record_type().to_string(), "TXT");
    }
}
