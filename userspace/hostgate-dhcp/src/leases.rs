//! The lease table of one network and its state machine.
//!
//! Invariants (property-tested): an address has at most one lease, a
//! client at most one address; a reserved address goes to its client only;
//! every leased address is in a pool or reserved. Time is seconds since the
//! epoch, passed in by the caller.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use crate::{
    identity::{reservation_for, Client, ClientKey, Reservation},
    network::Network,
};

/// Where a lease stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Offered, waiting for the REQUEST (held briefly).
    Offered,
    /// Acknowledged: the client uses it.
    Bound,
    /// A client said it is in use by someone else (DECLINE): quarantined.
    Declined,
}

/// One address and who holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub addr: Ipv4Addr,
    /// `None` while declined.
    pub client: Option<ClientKey>,
    pub mac: [u8; 6],
    pub hostname: Option<String>,
    pub state: State,
    /// Seconds since the epoch.
    pub expires: u64,
}

/// What to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Offer(Lease),
    Ack(Lease),
    Nak(&'static str),
    /// Say nothing (counted as a drop).
    Ignore(&'static str),
}

/// Limits against clients that would drain a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long an offer holds its address.
    pub offer_secs: u64,
    /// How long a declined address stays out of the pool.
    pub quarantine_secs: u64,
    /// New addresses one MAC may be given per minute.
    pub per_mac_per_minute: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { offer_secs: 30, quarantine_secs: 600, per_mac_per_minute: 10 }
    }
}

/// The leases of one network.
#[derive(Debug)]
pub struct LeaseTable {
    network: Network,
    limits: Limits,
    by_addr: BTreeMap<Ipv4Addr, Lease>,
    by_client: HashMap<ClientKey, Ipv4Addr>,
    /// Times new addresses went to each MAC in the last minute.
    recent: HashMap<[u8; 6], VecDeque<u64>>,
    /// Bound addresses a client moved away from (a new reservation), until
    /// the caller takes them to delete from storage.
    vacated: HashMap<ClientKey, Ipv4Addr>,
}

impl LeaseTable {
    pub fn new(network: Network, limits: Limits) -> Self {
        LeaseTable {
            network,
            limits,
            by_addr: BTreeMap::new(),
            by_client: HashMap::new(),
            recent: HashMap::new(),
            vacated: HashMap::new(),
        }
    }

    /// A table from stored leases (at start-up); the ones that conflict
    /// with an earlier one, or lie outside the network, are returned.
    pub fn restore(network: Network, limits: Limits, stored: Vec<Lease>) -> (Self, Vec<Lease>) {
        let mut t = Self::new(network, limits);
        let mut refused = Vec::new();
        for l in stored {
            let taken = t.by_addr.contains_key(&l.addr)
                || l.client.as_ref().is_some_and(|c| t.by_client.contains_key(c))
                || !t.network.contains(l.addr);
            if taken {
                refused.push(l);
                continue;
            }
            if let Some(c) = &l.client {
                t.by_client.insert(c.clone(), l.addr);
            }
            t.by_addr.insert(l.addr, l);
        }
        (t, refused)
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.by_addr.values()
    }

    /// The bound address `client` moved away from since the last call, to
    /// delete from storage once the new one is bound.
    pub fn take_vacated(&mut self, client: &ClientKey) -> Option<Ipv4Addr> {
        self.vacated.remove(client)
    }

    /// Removes leases whose time is up; the bound ones that ended (their
    /// derived state, allowed sources and DNS names, goes with them).
    pub fn expire(&mut self, now: u64) -> Vec<Lease> {
        let gone: Vec<Ipv4Addr> = self.by_addr.values().filter(|l| l.expires <= now).map(|l| l.addr).collect();
        gone.into_iter().filter_map(|a| self.remove(a)).filter(|l| l.state == State::Bound).collect()
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Option<Lease> {
        let l = self.by_addr.remove(&addr)?;
        if let Some(c) = &l.client {
            if self.by_client.get(c) == Some(&addr) {
                self.by_client.remove(c);
            }
        }
        Some(l)
    }

    fn reserved_for_other(&self, addr: Ipv4Addr, client: &Client, reservations: &[Reservation]) -> bool {
        reservations
            .iter()
            .any(|r| r.network == self.network.name && r.addr == addr && !client.matches(&r.reserved_for))
    }

    fn free(&self, addr: Ipv4Addr, client: &Client, reservations: &[Reservation]) -> bool {
        let held_by_other = self.by_addr.get(&addr).is_some_and(|l| l.client.as_ref() != Some(&client.key));
        !held_by_other && !self.reserved_for_other(addr, client, reservations)
    }

    /// Whether `mac` may be given one more new address now (and counts it).
    fn within_rate(&mut self, now: u64, mac: [u8; 6]) -> bool {
        let q = self.recent.entry(mac).or_default();
        while q.front().is_some_and(|t| *t + 60 <= now) {
            q.pop_front();
        }
        if q.len() >= self.limits.per_mac_per_minute {
            return false;
        }
        q.push_back(now);
        true
    }

    /// The address for `client`: its reservation, its current lease, the
    /// address it asks for if free, else the first free one of the pools.
    fn choose(&self, client: &Client, requested: Option<Ipv4Addr>, reservations: &[Reservation]) -> Option<Ipv4Addr> {
        if let Some(r) = reservation_for(reservations, &self.network.name, client) {
            return self.free(r.addr, client, reservations).then_some(r.addr);
        }
        if let Some(a) = self.by_client.get(&client.key) {
            return Some(*a);
        }
        let in_pool = |a: Ipv4Addr| self.network.pools.iter().any(|p| p.contains(a));
        if let Some(a) = requested.filter(|a| in_pool(*a) && self.free(*a, client, reservations)) {
            return Some(a);
        }
        self.network
            .pools
            .iter()
            .flat_map(|p| (u32::from(p.first)..=u32::from(p.last)).map(Ipv4Addr::from))
            .find(|a| !self.by_addr.contains_key(a) && !self.reserved_for_other(*a, client, reservations))
    }

    fn hold(&mut self, addr: Ipv4Addr, client: &Client, state: State, expires: u64) -> Lease {
        if let Some(old) = self.by_client.get(&client.key).copied() {
            if old != addr && self.remove(old).is_some_and(|l| l.state == State::Bound) {
                self.vacated.insert(client.key.clone(), old);
            }
        }
        let lease = Lease {
            addr,
            client: Some(client.key.clone()),
            mac: client.mac,
            hostname: client.hostname.clone(),
            state,
            expires,
        };
        self.by_client.insert(client.key.clone(), addr);
        self.by_addr.insert(addr, lease.clone());
        lease
    }

    /// DISCOVER: an offer, held for `offer_secs`.
    pub fn discover(
        &mut self,
        now: u64,
        client: &Client,
        requested: Option<Ipv4Addr>,
        reservations: &[Reservation],
    ) -> Answer {
        self.expire(now);
        let Some(addr) = self.choose(client, requested, reservations) else {
            return Answer::Ignore("no free address");
        };
        let existing = self.by_addr.get(&addr).filter(|l| l.client.as_ref() == Some(&client.key)).cloned();
        if let Some(l) = existing.as_ref().filter(|l| l.state == State::Bound) {
            return Answer::Offer(l.clone());
        }
        if existing.is_none() && !self.within_rate(now, client.mac) {
            return Answer::Ignore("too many new addresses for this MAC");
        }
        Answer::Offer(self.hold(addr, client, State::Offered, now + self.limits.offer_secs))
    }

    /// REQUEST (selecting, init-reboot, renewing or rebinding): bind the
    /// address asked for (option 50) or in use (ciaddr), or refuse it.
    pub fn request(&mut self, now: u64, client: &Client, addr: Ipv4Addr, reservations: &[Reservation]) -> Answer {
        self.expire(now);
        if !self.network.contains(addr) {
            return Answer::Nak("not on this network");
        }
        let reserved = reservation_for(reservations, &self.network.name, client).map(|r| r.addr);
        if reserved.is_some_and(|r| r != addr) {
            return Answer::Nak("this client has another address reserved");
        }
        match self.by_addr.get(&addr) {
            Some(l) if l.state == State::Declined => return Answer::Nak("address quarantined after a decline"),
            Some(l) if l.client.as_ref() != Some(&client.key) => return Answer::Nak("address held by another client"),
            _ => {}
        }
        if self.reserved_for_other(addr, client, reservations) {
            return Answer::Nak("address reserved for another client");
        }
        let in_pool = self.network.pools.iter().any(|p| p.contains(addr));
        if !in_pool && reserved != Some(addr) {
            return Answer::Nak("address not in a pool");
        }
        let known = self.by_client.get(&client.key) == Some(&addr);
        if !known && !self.within_rate(now, client.mac) {
            return Answer::Ignore("too many new addresses for this MAC");
        }
        Answer::Ack(self.hold(addr, client, State::Bound, now + u64::from(self.network.lease_secs)))
    }

    /// RELEASE: the client gives its address back.
    pub fn release(&mut self, client: &Client, addr: Ipv4Addr) -> Option<Lease> {
        let mine = self.by_addr.get(&addr).is_some_and(|l| l.client.as_ref() == Some(&client.key));
        if mine {
            self.remove(addr)
        } else {
            None
        }
    }

    /// DECLINE: the client found the address in use; it leaves the pool for
    /// `quarantine_secs`.
    pub fn decline(&mut self, now: u64, client: &Client, addr: Ipv4Addr) -> bool {
        let mine = self.by_addr.get(&addr).is_some_and(|l| l.client.as_ref() == Some(&client.key));
        if mine {
            self.remove(addr);
            let quarantined = Lease {
                addr,
                client: None,
                mac: client.mac,
                hostname: None,
                state: State::Declined,
                expires: now + self.limits.quarantine_secs,
            };
            self.by_addr.insert(addr, quarantined);
        }
        mine
    }

    /// A container's port went away: its leases end now (whoever was
    /// behind that MAC). Returns the bound ones.
    pub fn forget_mac(&mut self, mac: [u8; 6]) -> Vec<Lease> {
        let gone: Vec<Ipv4Addr> =
            self.by_addr.values().filter(|l| l.mac == mac && l.state != State::Declined).map(|l| l.addr).collect();
        gone.into_iter().filter_map(|a| self.remove(a)).filter(|l| l.state == State::Bound).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        identity::ReservedFor,
        network::{Network, Pool},
    };

    fn net(last: u8) -> Network {
        Network {
            name: "n".into(),
            customer: "acme".into(),
            subnet: Ipv4Addr::new(198, 51, 100, 0),
            prefix_len: 24,
            gateway: Ipv4Addr::new(198, 51, 100, 1),
            pools: vec![Pool { first: Ipv4Addr::new(198, 51, 100, 10), last: Ipv4Addr::new(198, 51, 100, last) }],
            lease_secs: 3600,
            interfaces: vec![],
            node: None,
            dns: vec![],
            ipv6_prefix: None,
            dns6: vec![],
            search: vec![],
        }
    }

    fn client(n: u8) -> Client {
        Client::new([2, 0, 0, 0, 0, n], None)
    }

    fn addr(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, last)
    }

    #[test]
    fn dora_renew_release() {
        let mut t = LeaseTable::new(net(20), Limits::default());
        let c = client(1);
        let Answer::Offer(o) = t.discover(100, &c, None, &[]) else { panic!("no offer") };
        assert_eq!((o.addr, o.state), (addr(10), State::Offered));
        let Answer::Ack(a) = t.request(101, &c, o.addr, &[]) else { panic!("no ack") };
        assert_eq!((a.state, a.expires), (State::Bound, 101 + 3600));
        // Renewing keeps the address; another client cannot take it.
        assert!(matches!(t.request(2000, &c, o.addr, &[]), Answer::Ack(l) if l.expires == 2000 + 3600));
        assert_eq!(t.request(2001, &client(2), o.addr, &[]), Answer::Nak("address held by another client"));
        let Answer::Offer(o2) = t.discover(2002, &client(2), Some(o.addr), &[]) else { panic!() };
        assert_ne!(o2.addr, o.addr, "an asked-for address held by another is not offered");
        assert!(t.release(&c, o.addr).is_some());
        assert_eq!(
            t.request(2003, &client(3), o.addr, &[]).clone(),
            Answer::Ack(t.leases().find(|l| l.addr == o.addr).cloned().expect("lease"))
        );
    }

    #[test]
    fn declined_addresses_are_quarantined() {
        let mut t = LeaseTable::new(net(11), Limits::default());
        let c = client(1);
        let Answer::Offer(o) = t.discover(0, &c, None, &[]) else { panic!() };
        t.request(1, &c, o.addr, &[]);
        assert!(t.decline(2, &c, o.addr));
        assert_eq!(t.request(3, &client(2), o.addr, &[]), Answer::Nak("address quarantined after a decline"));
        let Answer::Offer(next) = t.discover(4, &c, None, &[]) else { panic!() };
        assert_eq!(next.addr, addr(11));
        // After the quarantine the address is back.
        t.release(&c, next.addr);
        assert!(matches!(t.discover(700, &client(3), None, &[]), Answer::Offer(l) if l.addr == addr(10)));
    }

    #[test]
    fn one_mac_cannot_drain_the_pool() {
        let limits = Limits { per_mac_per_minute: 3, ..Limits::default() };
        let mut t = LeaseTable::new(net(200), limits);
        // A client spraying client identifiers from one MAC.
        let offers = (0..10u8)
            .filter(|i| {
                matches!(t.discover(0, &Client::new([2, 0, 0, 0, 0, 9], Some(&[0, *i])), None, &[]), Answer::Offer(_))
            })
            .count();
        assert_eq!(offers, 3);
        assert!(matches!(t.discover(61, &Client::new([2, 0, 0, 0, 0, 9], Some(&[1, 1])), None, &[]), Answer::Offer(_)));
    }

    #[test]
    fn reservations_go_to_their_client_only() {
        let r = Reservation {
            network: "n".into(),
            reserved_for: ReservedFor::Mac([2, 0, 0, 0, 0, 7]),
            addr: addr(10),
            hostname: None,
        };
        let mut t = LeaseTable::new(net(12), Limits::default());
        let Answer::Offer(o) = t.discover(0, &client(1), None, std::slice::from_ref(&r)) else { panic!() };
        assert_eq!(o.addr, addr(11), "the first pool address is reserved");
        assert_eq!(
            t.request(1, &client(1), addr(10), std::slice::from_ref(&r)),
            Answer::Nak("address reserved for another client")
        );
        let Answer::Offer(mine) = t.discover(2, &client(7), None, std::slice::from_ref(&r)) else { panic!() };
        assert_eq!(mine.addr, addr(10));
    }

    #[test]
    fn restore_refuses_conflicts() {
        let l = |a: u8, c: u8| Lease {
            addr: addr(a),
            client: Some(client(c).key),
            mac: client(c).mac,
            hostname: None,
            state: State::Bound,
            expires: 10,
        };
        let (t, refused) =
            LeaseTable::restore(net(20), Limits::default(), vec![l(10, 1), l(10, 2), l(11, 1), l(12, 3)]);
        assert_eq!(t.leases().count(), 2);
        assert_eq!(refused.len(), 2);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Discover(u8, Option<u8>),
        Request(u8, u8),
        Release(u8, u8),
        Decline(u8, u8),
        Forget(u8),
        Tick(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, proptest::option::of(8u8..16)).prop_map(|(c, a)| Op::Discover(c, a)),
            (0u8..6, 8u8..16).prop_map(|(c, a)| Op::Request(c, a)),
            (0u8..6, 8u8..16).prop_map(|(c, a)| Op::Release(c, a)),
            (0u8..6, 8u8..16).prop_map(|(c, a)| Op::Decline(c, a)),
            (0u8..6).prop_map(Op::Forget),
            (0u16..4000).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// Whatever clients do, the invariants hold.
        #[test]
        fn invariants(ops in proptest::collection::vec(op(), 1..80)) {
            let reserved = Reservation { network: "n".into(), reserved_for: ReservedFor::Mac([2, 0, 0, 0, 0, 5]), addr: addr(12), hostname: None };
            let rs = [reserved];
            let mut t = LeaseTable::new(net(14), Limits::default());
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Discover(c, a) => { t.discover(now, &client(c), a.map(addr), &rs); }
                    Op::Request(c, a) => { t.request(now, &client(c), addr(a), &rs); }
                    Op::Release(c, a) => { t.release(&client(c), addr(a)); }
                    Op::Decline(c, a) => { t.decline(now, &client(c), addr(a)); }
                    Op::Forget(c) => { t.forget_mac(client(c).mac); }
                    Op::Tick(s) => now += u64::from(s),
                }
                let mut holders = std::collections::HashSet::new();
                for l in t.leases() {
                    if let Some(c) = &l.client {
                        prop_assert!(holders.insert(c.clone()), "a client holds two addresses");
                        prop_assert_eq!(t.by_client.get(c), Some(&l.addr));
                    }
                    let in_pool = t.network.pools.iter().any(|p| p.contains(l.addr));
                    prop_assert!(in_pool || l.addr == addr(12), "{} is neither pooled nor reserved", l.addr);
                    if l.addr == addr(12) && l.state != State::Declined {
                        prop_assert_eq!(l.mac, [2, 0, 0, 0, 0, 5], "the reserved address went to another client");
                    }
                }
                prop_assert_eq!(t.by_client.len(), t.leases().filter(|l| l.client.is_some()).count());
            }
        }
    }
}
