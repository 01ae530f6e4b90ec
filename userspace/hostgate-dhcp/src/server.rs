//! One request in, one decision out: the DHCPv4 server's logic without
//! sockets or storage. The daemon moves packets and commits what a
//! decision says; everything here is property-tested from raw bytes.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::v4::MessageType;

use crate::{
    identity::{Client, Reservations},
    leases::{Answer, Lease, LeaseTable},
    network::Network,
    wire::{self, Reply, Request, WireError},
};

/// Where a request came from, as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The interface it arrived on.
    pub iface: String,
    /// The address clients reach this server at: the network's gateway
    /// for direct clients, the receiving interface's address for relayed
    /// ones (they unicast renewals there).
    pub server_id: Ipv4Addr,
    /// Whether lease hostnames are published in DNS (answers to FQDN).
    pub registers_names: bool,
}

/// What to do about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Offer(Vec<u8>, SocketAddr),
    Nak(Vec<u8>, SocketAddr),
    Inform(Vec<u8>, SocketAddr),
    /// Make `lease` durable (and delete the lease at `vacated`, an address
    /// the client moved away from), then send the ACK.
    Ack {
        lease: Lease,
        vacated: Option<Lease>,
        reply: Vec<u8>,
        to: SocketAddr,
    },
    /// The client gave its lease back (if it held one): delete it.
    Released(Option<Lease>),
    /// The client found the address in use: store the quarantine.
    Declined(Option<Lease>),
    /// Not answered, and counted as a drop (pool exhausted, rate limit...).
    Refused(&'static str),
    /// Not for us (another server's offer, a message type a server ignores).
    Ignored,
}

/// The port a client asks from, for the per-port limit: the relay's
/// circuit-id, else the interface of a direct client.
pub fn port_of(req: &Request, iface: &str) -> Option<String> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
    match (&req.circuit_id, req.msg.giaddr().is_unspecified()) {
        (Some(c), _) => Some(format!("circuit:{}", hex(c))),
        (None, true) => Some(format!("iface:{iface}")),
        (None, false) => None,
    }
}

/// Decides what `req` gets from `network`'s `table` at `now`.
pub fn decide(
    network: &Network,
    table: &mut LeaseTable,
    reservations: &Reservations,
    req: &Request,
    at: &Arrival,
    now: u64,
) -> Result<Decision, WireError> {
    if req.server_id.is_some_and(|s| s != at.server_id) {
        // The client chose another server's offer.
        return Ok(Decision::Ignored);
    }
    let mut client = Client::new(req.chaddr, req.client_id.as_deref());
    client.circuit_id = req.circuit_id.clone();
    client.hostname = wire::client_hostname(req);
    client.port = port_of(req, &at.iface);
    let options = wire::ReplyOptions { registers_names: at.registers_names, ..network.reply_options(at.server_id) };
    let to = destination(req);
    let ciaddr = req.msg.ciaddr();
    let answer = match req.kind {
        MessageType::Discover => table.discover(now, &client, req.requested, reservations),
        MessageType::Request => {
            let Some(addr) = req.requested.or((!ciaddr.is_unspecified()).then_some(ciaddr)) else {
                return Ok(Decision::Ignored);
            };
            table.request(now, &client, addr, reservations)
        }
        MessageType::Release => return Ok(Decision::Released(table.release(&client, ciaddr))),
        MessageType::Decline => {
            let quarantined = req
                .requested
                .filter(|a| table.decline(now, &client, *a))
                .and_then(|a| table.leases().find(|l| l.addr == a).cloned());
            return Ok(Decision::Declined(quarantined));
        }
        MessageType::Inform if network.contains(ciaddr) => {
            return Ok(Decision::Inform(wire::reply(req, Reply::Inform, &options)?, to));
        }
        _ => return Ok(Decision::Ignored),
    };
    Ok(match answer {
        Answer::Offer(l) => Decision::Offer(wire::reply(req, Reply::Offer(&l), &options)?, to),
        Answer::Ack(l) => {
            let vacated =
                table.take_vacated(&client.key).filter(|a| *a != l.addr).map(|addr| Lease { addr, ..l.clone() });
            let reply = wire::reply(req, Reply::Ack(&l), &options)?;
            Decision::Ack { lease: l, vacated, reply, to }
        }
        Answer::Nak(_) => Decision::Nak(wire::reply(req, Reply::Nak, &options)?, to),
        Answer::Ignore(why) => Decision::Refused(why),
    })
}

/// Where a reply goes: the relay, the client's address, or a broadcast on
/// the interface for a client without an address (or that asked for one).
pub fn destination(req: &Request) -> SocketAddr {
    let giaddr = req.msg.giaddr();
    let ciaddr = req.msg.ciaddr();
    let to = if !giaddr.is_unspecified() {
        SocketAddrV4::new(giaddr, 67)
    } else if !ciaddr.is_unspecified() && !req.msg.flags().broadcast() {
        SocketAddrV4::new(ciaddr, 68)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    };
    SocketAddr::V4(to)
}

#[cfg(test)]
mod tests {
    use dhcproto::{
        v4::{DhcpOption, Message},
        Encodable,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::leases::State;

    /// A network as stored (every field not named takes its default).
    fn network() -> Network {
        serde_json::from_value(serde_json::json!({
            "name": "n", "customer": "acme", "subnet": "198.51.100.0", "prefix_len": 24,
            "gateway": "198.51.100.1", "lease_secs": 3600,
            "pools": [{ "first": "198.51.100.10", "last": "198.51.100.13" }],
        }))
        .expect("network")
    }

    fn arrival() -> Arrival {
        Arrival { iface: "hgd1".into(), server_id: Ipv4Addr::new(198, 51, 100, 1), registers_names: false }
    }

    fn packet(kind: MessageType, mac: u8, requested: Option<Ipv4Addr>) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(7, z, z, z, z, &[2, 0, 0, 0, 0, mac]);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        if let Some(a) = requested {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
        }
        m.to_vec().expect("encode")
    }

    #[test]
    fn a_full_exchange() {
        let (n, at) = (network(), arrival());
        let mut t = LeaseTable::new(n.clone(), n.limits());
        let rs = Reservations::default();
        let req = wire::parse(&packet(MessageType::Discover, 1, None)).expect("parse");
        let Decision::Offer(_, to) = decide(&n, &mut t, &rs, &req, &at, 0).expect("decide") else { panic!() };
        assert_eq!(to, "255.255.255.255:68".parse().expect("addr"), "no address yet: broadcast");
        let req = wire::parse(&packet(MessageType::Request, 1, Some(Ipv4Addr::new(198, 51, 100, 10)))).expect("parse");
        let Decision::Ack { lease, vacated, .. } = decide(&n, &mut t, &rs, &req, &at, 1).expect("decide") else {
            panic!()
        };
        assert_eq!((lease.state, lease.port.as_deref(), vacated), (State::Bound, Some("iface:hgd1"), None));
        let req = wire::parse(&packet(MessageType::Request, 2, Some(lease.addr))).expect("parse");
        assert!(matches!(decide(&n, &mut t, &rs, &req, &at, 2), Ok(Decision::Nak(..))));
    }

    proptest! {
        /// Arbitrary bytes through decoding and the state machine: never a
        /// panic, and never an address bound to two clients.
        #[test]
        fn arbitrary_packets_through_the_server(
            packets in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..600),
                    (0u8..6, 0u8..4, proptest::option::of(8u8..16), proptest::collection::vec(any::<u8>(), 0..40))
                        .prop_map(|(kind, mac, req, tail)| {
                            let kinds = [MessageType::Discover, MessageType::Request, MessageType::Release,
                                         MessageType::Decline, MessageType::Inform, MessageType::Offer];
                            let mut p = packet(kinds[usize::from(kind)], mac, req.map(|r| Ipv4Addr::new(198, 51, 100, r)));
                            // Garbage after the options, or in place of the End option.
                            p.pop();
                            p.extend(tail);
                            p
                        }),
                ],
                1..40,
            )
        ) {
            let (n, at) = (network(), arrival());
            let mut t = LeaseTable::new(n.clone(), n.limits());
            let rs = Reservations::default();
            for (i, bytes) in packets.iter().enumerate() {
                if let Ok(req) = wire::parse(bytes) {
                    let _ = decide(&n, &mut t, &rs, &req, &at, i as u64);
                }
                let mut holders = std::collections::HashSet::new();
                for l in t.leases().filter(|l| l.state == State::Bound) {
                    prop_assert!(holders.insert(l.client.clone()), "a client holds two addresses");
                }
            }
        }
    }
}
