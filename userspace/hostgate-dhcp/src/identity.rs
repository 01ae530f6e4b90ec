//! Who a client is, and which reservation it matches.

use std::{collections::HashMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

/// A client's identity for leases: its client identifier (option 61) if it
/// sent one, else its hardware address (RFC 2131 §4.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ClientKey {
    ClientId(Vec<u8>),
    Mac([u8; 6]),
}

impl ClientKey {
    pub fn of(client_id: Option<&[u8]>, mac: [u8; 6]) -> Self {
        match client_id {
            Some(id) if !id.is_empty() => ClientKey::ClientId(id.to_vec()),
            _ => ClientKey::Mac(mac),
        }
    }
}

/// The Ethernet address a client identifier carries, if any: type 1
/// (hardware type Ethernet, RFC 2132), or type 255 (RFC 4361: IAID, then a
/// DUID) with a DUID-LLT or DUID-LL of hardware type 1, the DUIDs
/// systemd-networkd and netplan send.
pub fn mac_in_client_id(id: &[u8]) -> Option<[u8; 6]> {
    let mac = |b: &[u8]| <[u8; 6]>::try_from(b).ok();
    match id {
        [1, rest @ ..] if rest.len() == 6 => mac(rest),
        [255, _, _, _, _, duid @ ..] => match duid {
            // DUID-LLT: type 1, hardware type 1, 4-byte time, address.
            [0, 1, 0, 1, _, _, _, _, addr @ ..] if addr.len() == 6 => mac(addr),
            // DUID-LL: type 3, hardware type 1, address.
            [0, 3, 0, 1, addr @ ..] if addr.len() == 6 => mac(addr),
            _ => None,
        },
        _ => None,
    }
}

/// What a reservation is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservedFor {
    Mac([u8; 6]),
    ClientId(Vec<u8>),
    /// Option 82 sub-option 1, as the relay agent sends it: a port.
    CircuitId(Vec<u8>),
}

/// A fixed address for one client of one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub network: String,
    pub reserved_for: ReservedFor,
    pub addr: Ipv4Addr,
    pub hostname: Option<String>,
}

/// What the server knows of the client asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub key: ClientKey,
    pub mac: [u8; 6],
    pub circuit_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
    /// The port it asks from (a relay's circuit-id, else the interface),
    /// for the per-port rate limit; `None` is not limited by port.
    pub port: Option<String>,
}

impl Client {
    pub fn new(mac: [u8; 6], client_id: Option<&[u8]>) -> Self {
        Client { key: ClientKey::of(client_id, mac), mac, circuit_id: None, hostname: None, port: None }
    }

    /// Whether `r` is this client's: by MAC (its chaddr, or the MAC inside
    /// its DUID client-id), by client identifier, or by the relay's
    /// circuit-id.
    pub fn matches(&self, r: &ReservedFor) -> bool {
        match r {
            ReservedFor::Mac(m) => {
                *m == self.mac || matches!(&self.key, ClientKey::ClientId(id) if mac_in_client_id(id) == Some(*m))
            }
            ReservedFor::ClientId(id) => matches!(&self.key, ClientKey::ClientId(mine) if mine == id),
            ReservedFor::CircuitId(c) => self.circuit_id.as_ref() == Some(c),
        }
    }
}

/// The reservations of one network, indexed for the lookups every packet
/// makes (by address, and by each kind of client identity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservations {
    by_addr: HashMap<Ipv4Addr, Reservation>,
    by_mac: HashMap<[u8; 6], Ipv4Addr>,
    by_client_id: HashMap<Vec<u8>, Ipv4Addr>,
    by_circuit: HashMap<Vec<u8>, Ipv4Addr>,
}

impl Reservations {
    /// The index of `list`; a later reservation of an address replaces an
    /// earlier one (the API refuses such duplicates anyway).
    pub fn new(list: impl IntoIterator<Item = Reservation>) -> Self {
        let mut rs = Reservations::default();
        for r in list {
            match &r.reserved_for {
                ReservedFor::Mac(m) => rs.by_mac.insert(*m, r.addr),
                ReservedFor::ClientId(id) => rs.by_client_id.insert(id.clone(), r.addr),
                ReservedFor::CircuitId(c) => rs.by_circuit.insert(c.clone(), r.addr),
            };
            rs.by_addr.insert(r.addr, r);
        }
        rs
    }

    /// The reservation of `addr`, if any.
    pub fn at(&self, addr: Ipv4Addr) -> Option<&Reservation> {
        self.by_addr.get(&addr)
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// `client`'s reservation: MAC first (its chaddr, or the MAC inside its
    /// DUID client-id), then client identifier, then circuit-id (the order
    /// operators are told).
    pub fn for_client(&self, client: &Client) -> Option<&Reservation> {
        let duid_mac = match &client.key {
            ClientKey::ClientId(id) => mac_in_client_id(id),
            ClientKey::Mac(_) => None,
        };
        let client_id = match &client.key {
            ClientKey::ClientId(id) => self.by_client_id.get(id),
            ClientKey::Mac(_) => None,
        };
        let addr = self
            .by_mac
            .get(&client.mac)
            .or_else(|| duid_mac.and_then(|m| self.by_mac.get(&m)))
            .or(client_id)
            .or_else(|| client.circuit_id.as_ref().and_then(|c| self.by_circuit.get(c)))?;
        self.by_addr.get(addr).filter(|r| client.matches(&r.reserved_for))
    }

    /// Whether `addr` is reserved for a client other than `client`.
    pub fn for_other(&self, addr: Ipv4Addr, client: &Client) -> bool {
        self.at(addr).is_some_and(|r| !client.matches(&r.reserved_for))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn macs_inside_client_identifiers() {
        assert_eq!(mac_in_client_id(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]), Some(MAC));
        // systemd-networkd: type 255, IAID, DUID-LLT.
        let llt = [255, 9, 8, 7, 6, 0, 1, 0, 1, 0x2a, 0x2b, 0x2c, 0x2d, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
        assert_eq!(mac_in_client_id(&llt), Some(MAC));
        let ll = [255, 9, 8, 7, 6, 0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
        assert_eq!(mac_in_client_id(&ll), Some(MAC));
        // DUID-EN (type 2) carries no MAC; neither does a bare string.
        assert_eq!(mac_in_client_id(&[255, 1, 2, 3, 4, 0, 2, 0, 0, 0, 9, 1, 2]), None);
        assert_eq!(mac_in_client_id(b"web-1"), None);
        assert_eq!(mac_in_client_id(&[]), None);
    }

    #[test]
    fn a_mac_reservation_matches_a_duid_client() {
        let r = |reserved_for, last| Reservation {
            network: "n".into(),
            reserved_for,
            addr: Ipv4Addr::new(198, 51, 100, last),
            hostname: None,
        };
        let all = Reservations::new([r(ReservedFor::CircuitId(b"port7".to_vec()), 30), r(ReservedFor::Mac(MAC), 10)]);
        let ll = [255, 9, 8, 7, 6, 0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
        // The DUID client's chaddr differs (a bond, say); its DUID holds the MAC.
        let mut client = Client::new([2, 0, 0, 0, 0, 1], Some(&ll));
        client.circuit_id = Some(b"port7".to_vec());
        assert_eq!(all.for_client(&client).map(|r| r.addr.octets()[3]), Some(10), "MAC ranks first");
        client.circuit_id = None;
        assert_eq!(all.for_client(&client).map(|r| r.addr.octets()[3]), Some(10), "by the MAC in the DUID");
        let stranger = Client::new([2, 0, 0, 0, 0, 2], None);
        assert_eq!(all.for_client(&stranger), None);
        let mut on_port = stranger.clone();
        on_port.circuit_id = Some(b"port7".to_vec());
        assert_eq!(all.for_client(&on_port).map(|r| r.addr.octets()[3]), Some(30), "by circuit-id");
        assert!(all.for_other(Ipv4Addr::new(198, 51, 100, 10), &stranger));
        assert!(!all.for_other(Ipv4Addr::new(198, 51, 100, 10), &client));
    }
}
