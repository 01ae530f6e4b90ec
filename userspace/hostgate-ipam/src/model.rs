//! Customers and IP assignments as the store keeps them.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> IpamError {
    IpamError::Invalid { field, problem: problem.into() }
}

/// DNS-label-like names: they end up in store keys, DNS and rules files.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seconds since the epoch.
    pub created: u64,
}

impl Customer {
    pub fn validate(&self) -> Result<(), IpamError> {
        if !valid_name(&self.name) {
            return Err(invalid("customer", format!("{:?} must be 1-63 characters of a-z, 0-9 and '-'", self.name)));
        }
        Ok(())
    }
}

/// An address prefix, `203.0.113.0/24` or `2001:db8:113::/48`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = || invalid("pool", format!("{s:?} is not ADDRESS/LENGTH"));
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad());
        }
        let cidr = Cidr { addr, len };
        if cidr.network() != addr {
            return Err(invalid("pool", format!("{s:?} has host bits set")));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len)) };
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One customer IP and who answers for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub addr: IpAddr,
    pub customer: String,
    /// Set by `--node` / `ip move`: the IP stays there. `None`: placed over
    /// the healthy nodes.
    pub pinned_node: Option<String>,
    /// Seconds since the epoch of the assignment.
    pub since: u64,
}

/// A customer's container (or VM) behind this node: the veth it sits
/// behind and what it may send from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub customer: String,
    /// Host-side interface of the container's veth.
    pub iface: String,
    pub ips: Vec<IpAddr>,
    /// `aa:bb:cc:dd:ee:ff`; `None` accepts any source MAC.
    pub mac: Option<String>,
    /// Source NAT of what it sends out: `masquerade` (the node's address
    /// on the way out) or an address (usually one of the customer's IPs).
    #[serde(default)]
    pub snat: Option<String>,
    pub created: u64,
    /// The node it sits behind (the one it was added on); `None` in
    /// registries written before clusters: this node.
    #[serde(default)]
    pub node: Option<String>,
}

impl Container {
    /// Whether it sits behind node `name`.
    pub fn on_node(&self, name: &str) -> bool {
        self.node.as_deref().is_none_or(|n| n == name)
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

impl Container {
    pub fn validate(&self) -> Result<(), IpamError> {
        if !valid_name(&self.name) {
            return Err(invalid("container", format!("{:?} must be 1-63 characters of a-z, 0-9 and '-'", self.name)));
        }
        let ifname_ok = !self.iface.is_empty()
            && self.iface.len() < 16
            && !self.iface.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
        if !ifname_ok {
            return Err(invalid("iface", format!("{:?} is not an interface name", self.iface)));
        }
        if self.ips.is_empty() && self.mac.is_none() {
            return Err(invalid("ip", "a container needs an address (--ip), or its MAC (--mac) to get one by DHCP"));
        }
        if let Some(s) = &self.snat {
            if s != "masquerade" && s.parse::<IpAddr>().is_err() {
                return Err(invalid("snat", format!("{s:?} is neither `masquerade` nor an address")));
            }
        }
        if let Some(m) = &self.mac {
            if parse_mac(m).is_none() {
                return Err(invalid("mac", format!("{m:?} is not a MAC address like 02:00:00:00:00:01")));
            }
        }
        Ok(())
    }
}

/// Checks an address against the pools before it is assigned.
pub fn check_assignable(addr: IpAddr, pools: &[Cidr]) -> Result<(), IpamError> {
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
        return Err(invalid("address", format!("{addr} cannot be a customer IP")));
    }
    if pools.is_empty() {
        return Err(invalid("address", "no IP pools are configured (ip.pools in the config)"));
    }
    if !pools.iter().any(|p| p.contains(addr)) {
        let list: Vec<String> = pools.iter().map(ToString::to_string).collect();
        return Err(invalid("address", format!("{addr} is outside the configured pools ({})", list.join(", "))));
    }
    Ok(())
}

/// Store keys.
pub mod keys {
    use std::net::IpAddr;

    pub const CUSTOMERS: &str = "customers/";
    pub const CONTAINERS: &str = "containers/";

    pub fn container(name: &str) -> String {
        format!("{CONTAINERS}{name}")
    }
    pub const IPS: &str = "ips/";

    pub fn customer(name: &str) -> String {
        format!("{CUSTOMERS}{name}")
    }

    pub fn ip(addr: IpAddr) -> String {
        format!("{IPS}{addr}")
    }

    /// Addresses a node itself added to its interfaces (and so may remove).
    pub fn local_addresses(node: &str) -> String {
        format!("local/{node}/addresses/")
    }

    pub fn local_address(node: &str, addr: IpAddr) -> String {
        format!("{}{addr}", local_addresses(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["acme", "a", "acme-2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Acme", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let p: Cidr = "203.0.113.0/24".parse().expect("cidr");
        assert!(p.contains("203.0.113.10".parse().expect("ip")));
        assert!(!p.contains("203.0.114.10".parse().expect("ip")));
        let p6: Cidr = "2001:db8:113::/48".parse().expect("cidr");
        assert!(p6.contains("2001:db8:113::10".parse().expect("ip")));
        assert!(!p6.contains("203.0.113.10".parse().expect("ip")));
        assert!("203.0.113.1/24".parse::<Cidr>().is_err(), "host bits");
        assert!("203.0.113.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn assignable() {
        let pools = vec!["203.0.113.0/24".parse().expect("cidr")];
        assert!(check_assignable("203.0.113.10".parse().expect("ip"), &pools).is_ok());
        let e = check_assignable("198.51.100.1".parse().expect("ip"), &pools).expect_err("outside");
        assert_eq!(e.to_string(), "address: 198.51.100.1 is outside the configured pools (203.0.113.0/24)");
        assert!(check_assignable("203.0.113.10".parse().expect("ip"), &[]).is_err());
    }
}
