//! A customer's DHCP network: what the server hands out on its interfaces.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkError {
    #[error("name: {0:?} must be 1-63 characters of a-z, 0-9 and '-'")]
    Name(String),
    #[error("subnet: /{0} leaves no room for clients (use /8 to /30)")]
    SubnetSize(u8),
    #[error("subnet: {0}/{1} has host bits set")]
    HostBits(Ipv4Addr, u8),
    #[error("gateway: {0} is not inside {1}/{2}")]
    Gateway(Ipv4Addr, Ipv4Addr, u8),
    #[error("pool {0}-{1}: {2}")]
    Pool(Ipv4Addr, Ipv4Addr, &'static str),
    #[error("lease_secs: {0} is not between 60 and 2592000 (30 days)")]
    LeaseTime(u32),
    #[error("ipv6_prefix: {0}/{1} must be a /64 without host bits, global unicast (SLAAC needs a /64)")]
    Ipv6Prefix(Ipv6Addr, u8),
    #[error("dns6: {0} is not a unicast address")]
    Dns6(Ipv6Addr),
    #[error("search: {0:?} is not a domain name (labels of 1-63 letters, digits and '-', 253 characters at most)")]
    Search(String),
    #[error("{0}: needs ipv6_prefix (router advertisements carry it)")]
    NeedsIpv6(&'static str),
}

/// An inclusive address range handed out dynamically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.first <= a && a <= self.last
    }

    /// How many addresses it holds.
    pub fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }
}

/// A network as the operator declares it (`hostgate network add`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub customer: String,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub pools: Vec<Pool>,
    pub lease_secs: u32,
    /// Container-facing interfaces the server answers on (of the node
    /// that declared the network).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// The node whose interfaces these are.
    #[serde(default)]
    pub node: Option<String>,
    /// DNS servers handed out (default: the gateway, where hostgate's DNS answers).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// The /64 advertised for SLAAC on the interfaces (router advertisements;
    /// the node takes `prefix::1` as its router address there).
    #[serde(default)]
    pub ipv6_prefix: Option<(Ipv6Addr, u8)>,
    /// IPv6 DNS servers advertised (RDNSS; default: the router address,
    /// where hostgate's DNS answers).
    #[serde(default)]
    pub dns6: Vec<Ipv6Addr>,
    /// DNS search domains advertised (DNSSL), the network's own domain first.
    #[serde(default)]
    pub search: Vec<String>,
}

/// Store keys.
pub mod keys {
    use std::net::Ipv4Addr;

    pub const DHCP: &str = "dhcp/";
    pub const NETWORKS: &str = "dhcp/networks/";
    pub const LEASES: &str = "dhcp/leases/";
    pub const RESERVATIONS: &str = "dhcp/reservations/";

    /// `kind` is mac, cid or circuit; `id` its value in hex.
    pub fn reservation(network: &str, kind: &str, id: &str) -> String {
        format!("{RESERVATIONS}{network}/{kind}-{id}")
    }

    pub fn network(name: &str) -> String {
        format!("{NETWORKS}{name}")
    }
    pub fn leases_of(network: &str) -> String {
        format!("{LEASES}{network}/")
    }
    pub fn lease(network: &str, addr: Ipv4Addr) -> String {
        format!("{LEASES}{network}/{addr}")
    }
}

impl Network {
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        u32::from(a) & mask == u32::from(self.subnet)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) | !(u32::MAX << (32 - u32::from(self.prefix_len))))
    }

    /// Checks the declaration; the first problem, naming its field.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let name_ok = (1..=63).contains(&self.name.len())
            && !self.name.starts_with('-')
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(NetworkError::Name(self.name.clone()));
        }
        if !(8..=30).contains(&self.prefix_len) {
            return Err(NetworkError::SubnetSize(self.prefix_len));
        }
        if !self.contains(self.subnet) || u32::from(self.subnet) & !(u32::MAX << (32 - u32::from(self.prefix_len))) != 0
        {
            return Err(NetworkError::HostBits(self.subnet, self.prefix_len));
        }
        if !self.contains(self.gateway) || self.gateway == self.subnet || self.gateway == self.broadcast() {
            return Err(NetworkError::Gateway(self.gateway, self.subnet, self.prefix_len));
        }
        for (i, p) in self.pools.iter().enumerate() {
            let bad = |why| Err(NetworkError::Pool(p.first, p.last, why));
            if p.first > p.last {
                return bad("its first address is above its last");
            }
            if !self.contains(p.first) || !self.contains(p.last) {
                return bad("it is not inside the subnet");
            }
            if p.contains(self.subnet) || p.contains(self.broadcast()) {
                return bad("it holds the subnet's network or broadcast address");
            }
            if p.contains(self.gateway) {
                return bad("it holds the gateway");
            }
            if self.pools[..i].iter().any(|q| q.first <= p.last && p.first <= q.last) {
                return bad("it overlaps an earlier pool");
            }
        }
        if !(60..=2_592_000).contains(&self.lease_secs) {
            return Err(NetworkError::LeaseTime(self.lease_secs));
        }
        self.validate_ipv6()
    }

    /// The IPv6 side: a global /64, unicast DNS servers, search domains
    /// that are domain names; DNS servers and domains only with a prefix
    /// (they travel in its router advertisements).
    fn validate_ipv6(&self) -> Result<(), NetworkError> {
        if let Some((addr, len)) = self.ipv6_prefix {
            let host_bits = u128::from(addr) & (u128::MAX >> 64) != 0;
            let special = addr.is_multicast()
                || addr.is_loopback()
                || addr.is_unspecified()
                || (addr.segments()[0] & 0xffc0) == 0xfe80;
            if len != 64 || host_bits || special {
                return Err(NetworkError::Ipv6Prefix(addr, len));
            }
        } else if !self.dns6.is_empty() {
            return Err(NetworkError::NeedsIpv6("dns6"));
        } else if !self.search.is_empty() {
            return Err(NetworkError::NeedsIpv6("search"));
        }
        if let Some(a) = self.dns6.iter().find(|a| a.is_multicast() || a.is_unspecified()) {
            return Err(NetworkError::Dns6(*a));
        }
        if let Some(d) = self.search.iter().find(|d| crate::ra::encode_name(d).is_none()) {
            return Err(NetworkError::Search(d.clone()));
        }
        Ok(())
    }

    /// The router address on the interfaces: `prefix::1`.
    pub fn router6(&self) -> Option<Ipv6Addr> {
        self.ipv6_prefix.map(|(p, _)| Ipv6Addr::from(u128::from(p) | 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn net() -> Network {
        Network {
            name: "acme-web".into(),
            customer: "acme".into(),
            subnet: Ipv4Addr::new(198, 51, 100, 0),
            prefix_len: 24,
            gateway: Ipv4Addr::new(198, 51, 100, 1),
            pools: vec![Pool { first: Ipv4Addr::new(198, 51, 100, 100), last: Ipv4Addr::new(198, 51, 100, 199) }],
            lease_secs: 3600,
            interfaces: vec![],
            node: None,
            dns: vec![],
            ipv6_prefix: None,
            dns6: vec![],
            search: vec![],
        }
    }

    #[test]
    fn declarations_are_checked_field_by_field() {
        assert_eq!(net().validate(), Ok(()));
        let with = |f: fn(&mut Network)| {
            let mut n = net();
            f(&mut n);
            n.validate().expect_err("invalid").to_string()
        };
        assert_eq!(with(|n| n.prefix_len = 31), "subnet: /31 leaves no room for clients (use /8 to /30)");
        assert_eq!(with(|n| n.subnet = Ipv4Addr::new(198, 51, 100, 5)), "subnet: 198.51.100.5/24 has host bits set");
        assert_eq!(
            with(|n| n.gateway = Ipv4Addr::new(198, 18, 0, 1)),
            "gateway: 198.18.0.1 is not inside 198.51.100.0/24"
        );
        assert_eq!(
            with(|n| n
                .pools
                .push(Pool { first: Ipv4Addr::new(198, 51, 100, 150), last: Ipv4Addr::new(198, 51, 100, 250) })),
            "pool 198.51.100.150-198.51.100.250: it overlaps an earlier pool"
        );
        assert_eq!(
            with(|n| n.pools[0].last = Ipv4Addr::new(198, 51, 101, 10)),
            "pool 198.51.100.100-198.51.101.10: it is not inside the subnet"
        );
        assert_eq!(
            with(|n| n.pools[0].first = Ipv4Addr::new(198, 51, 100, 1)),
            "pool 198.51.100.1-198.51.100.199: it holds the gateway"
        );
        assert_eq!(with(|n| n.lease_secs = 10), "lease_secs: 10 is not between 60 and 2592000 (30 days)");
    }

    #[test]
    fn ipv6_fields_are_checked_and_optional() {
        let v6 = |f: fn(&mut Network)| {
            let mut n = net();
            n.ipv6_prefix = Some(("2001:db8:1::".parse().expect("addr"), 64));
            f(&mut n);
            n.validate().map_err(|e| e.to_string())
        };
        assert_eq!(v6(|_| {}), Ok(()));
        assert_eq!(v6(|n| n.search = vec!["example.test".into(), "test".into()]), Ok(()));
        assert_eq!(
            v6(|n| n.ipv6_prefix = Some(("2001:db8::".parse().expect("addr"), 48))),
            Err("ipv6_prefix: 2001:db8::/48 must be a /64 without host bits, global unicast (SLAAC needs a /64)".into())
        );
        assert!(v6(|n| n.ipv6_prefix = Some(("2001:db8:1::5".parse().expect("addr"), 64))).is_err());
        assert!(v6(|n| n.ipv6_prefix = Some(("fe80::".parse().expect("addr"), 64))).is_err());
        assert_eq!(
            v6(|n| n.dns6 = vec!["ff02::1".parse().expect("addr")]),
            Err("dns6: ff02::1 is not a unicast address".into())
        );
        assert!(v6(|n| n.search = vec!["bad..name".into()]).unwrap_err().starts_with("search: \"bad..name\""));
        let mut n = net();
        n.dns6 = vec!["2001:db8::53".parse().expect("addr")];
        assert_eq!(
            n.validate().map_err(|e| e.to_string()),
            Err("dns6: needs ipv6_prefix (router advertisements carry it)".into())
        );
        n.dns6.clear();
        assert_eq!(n.router6(), None);
        n.ipv6_prefix = Some(("2001:db8:1::".parse().expect("addr"), 64));
        assert_eq!(n.router6(), Some("2001:db8:1::1".parse().expect("addr")));
    }

    #[test]
    fn networks_stored_before_ipv6_still_load() {
        let mut stored = serde_json::to_value(net()).expect("json");
        let obj = stored.as_object_mut().expect("object");
        for f in ["ipv6_prefix", "dns6", "search"] {
            obj.remove(f);
        }
        let n: Network = serde_json::from_value(stored).expect("old record loads");
        assert_eq!(n, net());
    }
}
