//! VIPs and backends as operators write them and the store keeps them.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::maglev::{is_prime, DEFAULT_RING_SIZE};

/// Upper bounds shared with the BPF maps (`hostgate_abi.h`).
pub const MAX_VIPS: u32 = 512;
pub const MAX_BACKENDS: u32 = 4096;
pub const MAX_WEIGHT: u32 = 1000;
/// Largest table accepted: one million slots (4 MiB) per VIP.
pub const MAX_RING_SIZE: u32 = 1_000_003;
pub const MIN_RING_SIZE: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ModelError {
    ModelError::Invalid { field, problem: problem.into() }
}

/// Transport protocol a VIP is narrowed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

impl FromStr for L4Proto {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "tcp" => Ok(L4Proto::Tcp),
            "udp" => Ok(L4Proto::Udp),
            other => Err(invalid("proto", format!("{other:?} is not tcp or udp"))),
        }
    }
}

/// What identifies a VIP: an address, optionally narrowed to a protocol and
/// port. Written `203.0.113.10` (every protocol and port),
/// `203.0.113.10/tcp` or `203.0.113.10:80/tcp`, `[2001:db8::10]:53/udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VipKey {
    pub addr: IpAddr,
    pub proto: Option<L4Proto>,
    pub port: Option<u16>,
}

impl VipKey {
    pub fn new(addr: IpAddr, proto: Option<L4Proto>, port: Option<u16>) -> Result<Self, ModelError> {
        if port.is_some() && proto.is_none() {
            return Err(invalid("port", "a port needs a protocol (--proto tcp|udp)"));
        }
        if port == Some(0) {
            return Err(invalid("port", "port 0 is not a service port"));
        }
        if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
            return Err(invalid("address", format!("{addr} cannot be a VIP")));
        }
        if let IpAddr::V4(v4) = addr {
            if v4.is_broadcast() {
                return Err(invalid("address", format!("{addr} cannot be a VIP")));
            }
        }
        Ok(VipKey { addr, proto, port })
    }

    /// The key's store form: no '/', so backends can nest under it.
    pub fn store_id(&self) -> String {
        format!(
            "{}_{}_{}",
            self.addr,
            self.proto.map_or("any", L4Proto::as_str),
            self.port.map_or_else(|| "any".to_string(), |p| p.to_string())
        )
    }
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = match self.addr {
            IpAddr::V6(a) if self.port.is_some() => format!("[{a}]"),
            a => a.to_string(),
        };
        match (self.port, self.proto) {
            (Some(port), Some(proto)) => write!(f, "{addr}:{port}/{}", proto.as_str()),
            (None, Some(proto)) => write!(f, "{addr}/{}", proto.as_str()),
            _ => f.write_str(&addr),
        }
    }
}

impl FromStr for VipKey {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let (rest, proto) = match s.rsplit_once('/') {
            Some((rest, p)) => (rest, Some(p.parse()?)),
            None => (s, None),
        };
        let bad = || invalid("vip", format!("{s:?} is not ADDR, ADDR/PROTO or ADDR:PORT/PROTO"));
        let (addr, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (a, p) = v6.split_once("]:").ok_or_else(bad)?;
            (a.parse().map_err(|_| bad())?, Some(p.parse().map_err(|_| bad())?))
        } else if let Ok(addr) = rest.parse::<IpAddr>() {
            (addr, None)
        } else {
            let (a, p) = rest.rsplit_once(':').ok_or_else(bad)?;
            (a.parse().map_err(|_| bad())?, Some(p.parse().map_err(|_| bad())?))
        };
        VipKey::new(addr, proto, port)
    }
}

/// A VIP as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSpec {
    pub key: VipKey,
    /// Slot in the BPF VIP tables; assigned once, stable for the VIP's life.
    pub id: u32,
    /// Maglev table size (prime).
    pub ring_size: u32,
}

impl VipSpec {
    pub fn validate_ring(ring_size: u32) -> Result<(), ModelError> {
        if !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&ring_size) || !is_prime(ring_size) {
            return Err(invalid(
                "ring-size",
                format!("{ring_size} must be a prime between {MIN_RING_SIZE} and {MAX_RING_SIZE} (default {DEFAULT_RING_SIZE})"),
            ));
        }
        Ok(())
    }
}

/// How packets reach a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A container on this node: destination rewritten, replies rewritten back.
    #[default]
    Nat,
    /// On another node: IPIP/IP6IP6 to that node, which delivers locally;
    /// replies go straight to the client.
    Dsr,
}

impl FromStr for Mode {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "nat" => Ok(Mode::Nat),
            "dsr" => Ok(Mode::Dsr),
            other => Err(invalid("mode", format!("{other:?} is not nat or dsr"))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Nat => "nat",
            Mode::Dsr => "dsr",
        })
    }
}

/// A backend of one VIP, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    pub vip: VipKey,
    pub addr: IpAddr,
    /// Destination port at the backend; `None` keeps the VIP's.
    pub port: Option<u16>,
    pub weight: u32,
    pub mode: Mode,
    /// Node hosting the backend (DSR); `None` means this node.
    pub node: Option<String>,
    /// Slot in the BPF backend table; assigned once.
    pub id: u32,
    /// Probed by the daemon when set; unchecked backends count as healthy.
    #[serde(default)]
    pub check: Option<crate::health::HealthCheck>,
}

impl BackendSpec {
    /// Checks a backend against its VIP.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.addr.is_ipv4() != self.vip.addr.is_ipv4() {
            return Err(invalid("address", format!("{} and VIP {} are of different IP families", self.addr, self.vip)));
        }
        if self.addr.is_unspecified() || self.addr.is_multicast() {
            return Err(invalid("address", format!("{} cannot be a backend", self.addr)));
        }
        if self.port.is_some() && self.vip.port.is_none() {
            return Err(invalid("port", "a backend port needs a VIP with a port"));
        }
        if self.port == Some(0) {
            return Err(invalid("port", "port 0 is not a service port"));
        }
        if self.weight > MAX_WEIGHT {
            return Err(invalid("weight", format!("{} is above the maximum {MAX_WEIGHT}", self.weight)));
        }
        if let Some(check) = &self.check {
            check.validate()?;
            if check.port.or(self.port).or(self.vip.port).is_none() {
                return Err(invalid("check-port", "the VIP has no port: say which port to probe"));
            }
        }
        if self.mode == Mode::Dsr && self.node.is_none() {
            return Err(invalid("node", "a dsr backend needs --node, the node that hosts it"));
        }
        Ok(())
    }

    /// The port a health check probes.
    pub fn check_port(&self) -> Option<u16> {
        self.check.as_ref().and_then(|c| c.port).or(self.port).or(self.vip.port)
    }

    /// Identity for Maglev and the store: address and port.
    pub fn identity(&self) -> String {
        match (self.addr, self.port) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        }
    }
}

/// Store keys of the load balancer.
pub mod keys {
    use super::VipKey;

    pub const VIPS: &str = "lb/vips/";
    pub const BACKENDS: &str = "lb/backends/";
    pub const VIP_IDS: &str = "lb/ids/vip/";
    pub const BACKEND_IDS: &str = "lb/ids/backend/";
    pub const ROOT: &str = "lb/";

    pub fn vip(key: &VipKey) -> String {
        format!("{VIPS}{}", key.store_id())
    }

    /// Prefix of every backend of `vip`.
    pub fn backends_of(vip: &VipKey) -> String {
        format!("{BACKENDS}{}/", vip.store_id())
    }

    pub fn backend(vip: &VipKey, identity: &str) -> String {
        format!("{}{identity}", backends_of(vip))
    }

    pub fn vip_id(id: u32) -> String {
        format!("{VIP_IDS}{id}")
    }

    pub fn backend_id(id: u32) -> String {
        format!("{BACKEND_IDS}{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_keys_round_trip() {
        for s in [
            "203.0.113.10",
            "203.0.113.10/tcp",
            "203.0.113.10:80/tcp",
            "[2001:db8::10]:53/udp",
            "2001:db8::10/udp",
            "2001:db8::10",
        ] {
            let k: VipKey = s.parse().expect(s);
            assert_eq!(k.to_string(), s);
            assert!(!k.store_id().contains('/'));
        }
    }

    #[test]
    fn bad_vips_name_the_problem() {
        let err = |s: &str| s.parse::<VipKey>().expect_err(s).to_string();
        assert_eq!(err("203.0.113.10:80"), "port: a port needs a protocol (--proto tcp|udp)");
        assert_eq!(err("203.0.113.10:80/sctp"), "proto: \"sctp\" is not tcp or udp");
        assert_eq!(err("0.0.0.0"), "address: 0.0.0.0 cannot be a VIP");
        assert!(err("example.com").starts_with("vip:"));
        assert_eq!(err("203.0.113.10:0/tcp"), "port: port 0 is not a service port");
    }

    #[test]
    fn backend_rules() {
        let vip: VipKey = "203.0.113.10:80/tcp".parse().expect("vip");
        let b = BackendSpec {
            vip,
            addr: "198.51.100.6".parse().expect("ip"),
            port: Some(8080),
            weight: 1,
            mode: Mode::Nat,
            node: None,
            id: 1,
            check: None,
        };
        assert!(b.validate().is_ok());
        let v6 = BackendSpec { addr: "2001:db8::6".parse().expect("ip"), ..b.clone() };
        assert!(v6.validate().expect_err("family").to_string().contains("different IP families"));
        let dsr = BackendSpec { mode: Mode::Dsr, ..b.clone() };
        assert_eq!(
            dsr.validate().expect_err("node").to_string(),
            "node: a dsr backend needs --node, the node that hosts it"
        );
        let heavy = BackendSpec { weight: 5000, ..b };
        assert!(heavy.validate().is_err());
    }

    #[test]
    fn ring_sizes() {
        assert!(VipSpec::validate_ring(DEFAULT_RING_SIZE).is_ok());
        assert!(VipSpec::validate_ring(65_536).is_err());
        assert!(VipSpec::validate_ring(5).is_err());
    }
}
