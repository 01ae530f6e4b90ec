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
    #[error("{0}: {1:?} is not a domain name")]
    Domain(&'static str, String),
    #[error("mtu: {0} is not between 576 and 65535")]
    Mtu(u16),
    #[error("ipv6_prefix: {0}/{1} must be a /64 without host bits, global unicast (SLAAC needs a /64)")]
    Ipv6Prefix(Ipv6Addr, u8),
    #[error("dns6: {0} is not a unicast address")]
    Dns6(Ipv6Addr),
    #[error("dns6: needs ipv6_prefix (router advertisements carry it)")]
    Dns6WithoutPrefix,
}

/// A DNS name as DHCP hands it out: dot-separated labels of letters,
/// digits and '-', none empty or longer than 63, 253 characters at most.
fn valid_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
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
    /// New addresses one MAC may get per minute (0: no limit).
    #[serde(default = "default_max_new_per_mac")]
    pub max_new_per_mac: u32,
    /// New addresses one port (an interface, or a relay's circuit-id) may
    /// get per minute, so random MACs behind it cannot drain the pool (0: no
    /// limit).
    #[serde(default = "default_max_new_per_port")]
    pub max_new_per_port: u32,
    /// Domain name handed out (option 15).
    #[serde(default)]
    pub domain: Option<String>,
    /// Domain search list (option 119).
    #[serde(default)]
    pub search: Vec<String>,
    /// Interface MTU handed out (option 26).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Routed single addresses ("any IP of any server"): each client gets
    /// its address as a /32, with the gateway on-link through classless
    /// static routes (121), and the node routes the address to the port
    /// the client asked from. The gateway may then lie outside the subnet.
    #[serde(default)]
    pub routed: bool,
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
    /// The /64 advertised for SLAAC on the interfaces (router advertisements,
    /// which also carry `domain` and `search` as DNSSL, and `mtu`); the node
    /// takes `prefix::1` as its router address there.
    #[serde(default)]
    pub ipv6_prefix: Option<(Ipv6Addr, u8)>,
    /// IPv6 DNS servers advertised (RDNSS; default: the router address,
    /// where hostgate's DNS answers).
    #[serde(default)]
    pub dns6: Vec<Ipv6Addr>,
}

fn default_max_new_per_mac() -> u32 {
    10
}

fn default_max_new_per_port() -> u32 {
    60
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
    /// What every reply on this network carries; `server_id` is the
    /// address clients reach this server at.
    pub fn reply_options(&self, server_id: Ipv4Addr) -> crate::wire::ReplyOptions {
        let any = Ipv4Addr::UNSPECIFIED;
        let (prefix_len, routes) = match self.routed {
            // The gateway is reached on-link, then everything through it.
            true => (32, vec![(self.gateway, 32, any), (any, 0, self.gateway)]),
            false => (self.prefix_len, vec![]),
        };
        crate::wire::ReplyOptions {
            server_id,
            prefix_len,
            router: self.gateway,
            dns: if self.dns.is_empty() { vec![self.gateway] } else { self.dns.clone() },
            domain: self.domain.clone(),
            search: self.search.clone(),
            mtu: self.mtu,
            routes,
            lease_secs: self.lease_secs,
            registers_names: false,
        }
    }

    /// The lease table's limits for this network.
    pub fn limits(&self) -> crate::leases::Limits {
        crate::leases::Limits {
            per_mac_per_minute: self.max_new_per_mac as usize,
            per_port_per_minute: self.max_new_per_port as usize,
            ..Default::default()
        }
    }

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
        let gateway_on_subnet =
            self.contains(self.gateway) && self.gateway != self.subnet && self.gateway != self.broadcast();
        // Routed networks reach their gateway on-link, outside the subnet.
        let routed_gateway = self.routed && !self.contains(self.gateway);
        if !gateway_on_subnet && !routed_gateway {
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
        if let Some(d) = self.domain.as_ref().filter(|d| !valid_domain(d)) {
            return Err(NetworkError::Domain("domain", d.clone()));
        }
        if let Some(d) = self.search.iter().find(|d| !valid_domain(d)) {
            return Err(NetworkError::Domain("search", d.clone()));
        }
        if let Some(mtu) = self.mtu.filter(|m| *m < 576) {
            return Err(NetworkError::Mtu(mtu));
        }
        self.validate_ipv6()
    }

    /// The IPv6 side: a global /64, and unicast DNS servers only with it
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
            return Err(NetworkError::Dns6WithoutPrefix);
        }
        if let Some(a) = self.dns6.iter().find(|a| a.is_multicast() || a.is_unspecified()) {
            return Err(NetworkError::Dns6(*a));
        }
        Ok(())
    }

    /// The router address on the interfaces: `prefix::1`.
    pub fn router6(&self) -> Option<Ipv6Addr> {
        self.ipv6_prefix.map(|(p, _)| Ipv6Addr::from(u128::from(p) | 1))
    }

    /// The DNS search list advertised (DNSSL): the domain, then the
    /// search list, each once.
    pub fn search_list(&self) -> Vec<String> {
        let mut all: Vec<String> = self.domain.iter().chain(&self.search).cloned().collect();
        let mut seen = std::collections::HashSet::new();
        all.retain(|d| seen.insert(d.trim_end_matches('.').to_ascii_lowercase()));
        all
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
            max_new_per_mac: 10,
            max_new_per_port: 60,
            domain: None,
            search: vec![],
            mtu: None,
            routed: false,
            interfaces: vec![],
            node: None,
            dns: vec![],
            ipv6_prefix: None,
            dns6: vec![],
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
        assert_eq!(
            with(|n| n.search = vec!["ok.example".into(), "bad_name.example".into()]),
            "search: \"bad_name.example\" is not a domain name"
        );
        assert_eq!(with(|n| n.mtu = Some(100)), "mtu: 100 is not between 576 and 65535");
        // Routed: the gateway may (only then) lie outside the subnet.
        let mut routed = net();
        routed.routed = true;
        routed.gateway = Ipv4Addr::new(198, 18, 0, 1);
        assert_eq!(routed.validate(), Ok(()));
        let o = routed.reply_options(routed.gateway);
        assert_eq!((o.prefix_len, o.routes.len()), (32, 2));
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
    fn the_search_list_is_the_domain_then_the_search_domains_once() {
        let mut n = net();
        n.domain = Some("example.test".into());
        n.search = vec!["Example.test.".into(), "other.test".into()];
        assert_eq!(n.search_list(), ["example.test", "other.test"]);
    }

    #[test]
    fn networks_stored_before_ipv6_still_load() {
        let mut stored = serde_json::to_value(net()).expect("json");
        let obj = stored.as_object_mut().expect("object");
        for f in ["ipv6_prefix", "dns6"] {
            obj.remove(f);
        }
        let n: Network = serde_json::from_value(stored).expect("old record loads");
        assert_eq!(n, net());
    }
}
