//! The lease table of one network and its state machine.
//!
//! Invariants (property-tested): an address has at most one lease, a
//! client at most one address; a reserved address goes to its client only;
//! every leased address is in a pool or reserved. Time is seconds since the
//! epoch, passed in by the caller.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use crate::{
    identity::{Client, ClientKey, Reservations},
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
    /// The port the client asked from (interface or relay circuit-id).
    #[serde(default)]
    pub port: Option<String>,
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
    /// New addresses one MAC may be given per minute (0: no limit).
    pub per_mac_per_minute: usize,
    /// New addresses one port may be given per minute (0: no limit).
    pub per_port_per_minute: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { offer_secs: 30, quarantine_secs: 600, per_mac_per_minute: 10, per_port_per_minute: 60 }
    }
}

/// Times something was given a new address in the last minute, per key.
#[derive(Debug)]
struct RateWindow<K> {
    times: HashMap<K, VecDeque<u64>>,
    /// When keys with no recent time were last dropped (so a client
    /// spraying MACs cannot grow the map without bound).
    swept: u64,
}

impl<K: std::hash::Hash + Eq + Clone> RateWindow<K> {
    fn new() -> Self {
        RateWindow { times: HashMap::new(), swept: 0 }
    }

    /// Whether `key` is below `limit` now (0: no limit).
    fn allows(&mut self, now: u64, key: &K, limit: usize) -> bool {
        if limit == 0 {
            return true;
        }
        let Some(q) = self.times.get_mut(key) else { return true };
        while q.front().is_some_and(|t| *t + 60 <= now) {
            q.pop_front();
        }
        q.len() < limit
    }

    fn count(&mut self, now: u64, key: K) {
        if now >= self.swept + 60 {
            self.times.retain(|_, q| q.back().is_some_and(|t| *t + 60 > now));
            self.swept = now;
        }
        self.times.entry(key).or_default().push_back(now);
    }
}

/// The leases of one network.
#[derive(Debug)]
pub struct LeaseTable {
    network: Network,
    limits: Limits,
    by_addr: BTreeMap<Ipv4Addr, Lease>,
    by_client: HashMap<ClientKey, Ipv4Addr>,
    /// Every lease by when it ends, so expiry costs what expires.
    expiring: BTreeSet<(u64, Ipv4Addr)>,
    /// Where the search for a free pool address starts: after the last one
    /// handed out (Kea's iterative allocator), so a busy pool is not
    /// scanned from its start for every client.
    cursor: u32,
    new_per_mac: RateWindow<[u8; 6]>,
    new_per_port: RateWindow<String>,
    /// Stored leases that ended, until [`LeaseTable::expire`] hands them out.
    ended: Vec<Lease>,
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
            expiring: BTreeSet::new(),
            cursor: 0,
            new_per_mac: RateWindow::new(),
            new_per_port: RateWindow::new(),
            ended: Vec::new(),
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
            t.put(l);
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

    /// Removes leases whose time is up, and returns every stored lease
    /// (bound or declined) that ended since the last call, here or while
    /// answering a client: the caller deletes them from storage, and the
    /// bound ones' derived state (allowed sources, DNS names) with them.
    pub fn expire(&mut self, now: u64) -> Vec<Lease> {
        self.sweep(now);
        std::mem::take(&mut self.ended)
    }

    fn sweep(&mut self, now: u64) {
        while let Some((_, addr)) = self.expiring.first().copied().filter(|(t, _)| *t <= now) {
            let stored = self.remove(addr).filter(|l| l.state != State::Offered);
            self.ended.extend(stored);
        }
    }

    /// Stores `l` (replacing what held its address) and indexes its end.
    fn put(&mut self, l: Lease) {
        if let Some(old) = self.by_addr.get(&l.addr) {
            self.expiring.remove(&(old.expires, old.addr));
        }
        self.expiring.insert((l.expires, l.addr));
        self.by_addr.insert(l.addr, l);
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Option<Lease> {
        let l = self.by_addr.remove(&addr)?;
        self.expiring.remove(&(l.expires, l.addr));
        if let Some(c) = &l.client {
            if self.by_client.get(c) == Some(&addr) {
                self.by_client.remove(c);
            }
        }
        Some(l)
    }

    fn free(&self, addr: Ipv4Addr, client: &Client, reservations: &Reservations) -> bool {
        let held_by_other = self.by_addr.get(&addr).is_some_and(|l| l.client.as_ref() != Some(&client.key));
        !held_by_other && !reservations.for_other(addr, client)
    }

    /// Whether `client` may be given one more new address now, by its MAC
    /// and by its port (and counts it if so).
    fn within_rate(&mut self, now: u64, client: &Client) -> bool {
        let Limits { per_mac_per_minute: per_mac, per_port_per_minute: per_port, .. } = self.limits;
        let port_ok = client.port.as_ref().is_none_or(|p| self.new_per_port.allows(now, p, per_port));
        if !port_ok || !self.new_per_mac.allows(now, &client.mac, per_mac) {
            return false;
        }
        if per_mac > 0 {
            self.new_per_mac.count(now, client.mac);
        }
        if let (Some(p), true) = (&client.port, per_port > 0) {
            self.new_per_port.count(now, p.clone());
        }
        true
    }

    /// The address for `client`: its reservation, its current lease, the
    /// address it asks for if free, else the next free one of the pools.
    fn choose(
        &mut self,
        client: &Client,
        requested: Option<Ipv4Addr>,
        reservations: &Reservations,
    ) -> Option<Ipv4Addr> {
        if let Some(r) = reservations.for_client(client) {
            return self.free(r.addr, client, reservations).then_some(r.addr);
        }
        if let Some(a) = self.by_client.get(&client.key) {
            return Some(*a);
        }
        let in_pool = |a: Ipv4Addr| self.network.pools.iter().any(|p| p.contains(a));
        if let Some(a) = requested.filter(|a| in_pool(*a) && self.free(*a, client, reservations)) {
            return Some(a);
        }
        let total: u32 = self.network.pools.iter().map(|p| p.size()).sum();
        for step in 0..total {
            let at = (self.cursor + step) % total;
            let a = self.pool_address(at)?;
            if !self.by_addr.contains_key(&a) && !reservations.for_other(a, client) {
                self.cursor = (at + 1) % total;
                return Some(a);
            }
        }
        None
    }

    /// The `index`th address of the pools, in order.
    fn pool_address(&self, mut index: u32) -> Option<Ipv4Addr> {
        for p in &self.network.pools {
            if index < p.size() {
                return Some(Ipv4Addr::from(u32::from(p.first) + index));
            }
            index -= p.size();
        }
        None
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
            port: client.port.clone(),
        };
        self.by_client.insert(client.key.clone(), addr);
        self.put(lease.clone());
        lease
    }

    /// DISCOVER: an offer, held for `offer_secs`.
    pub fn discover(
        &mut self,
        now: u64,
        client: &Client,
        requested: Option<Ipv4Addr>,
        reservations: &Reservations,
    ) -> Answer {
        self.sweep(now);
        let Some(addr) = self.choose(client, requested, reservations) else {
            return Answer::Ignore("no free address");
        };
        let existing = self.by_addr.get(&addr).filter(|l| l.client.as_ref() == Some(&client.key)).cloned();
        if let Some(l) = existing.as_ref().filter(|l| l.state == State::Bound) {
            return Answer::Offer(l.clone());
        }
        if existing.is_none() && !self.within_rate(now, client) {
            return Answer::Ignore("too many new addresses for this MAC");
        }
        Answer::Offer(self.hold(addr, client, State::Offered, now + self.limits.offer_secs))
    }

    /// REQUEST (selecting, init-reboot, renewing or rebinding): bind the
    /// address asked for (option 50) or in use (ciaddr), or refuse it.
    pub fn request(&mut self, now: u64, client: &Client, addr: Ipv4Addr, reservations: &Reservations) -> Answer {
        self.sweep(now);
        if !self.network.contains(addr) {
            return Answer::Nak("not on this network");
        }
        let reserved = reservations.for_client(client).map(|r| r.addr);
        if reserved.is_some_and(|r| r != addr) {
            return Answer::Nak("this client has another address reserved");
        }
        match self.by_addr.get(&addr) {
            Some(l) if l.state == State::Declined => return Answer::Nak("address quarantined after a decline"),
            Some(l) if l.client.as_ref() != Some(&client.key) => return Answer::Nak("address held by another client"),
            _ => {}
        }
        if reservations.for_other(addr, client) {
            return Answer::Nak("address reserved for another client");
        }
        let in_pool = self.network.pools.iter().any(|p| p.contains(addr));
        if !in_pool && reserved != Some(addr) {
            return Answer::Nak("address not in a pool");
        }
        let known = self.by_client.get(&client.key) == Some(&addr);
        if !known && !self.within_rate(now, client) {
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
                port: None,
            };
            self.put(quarantined);
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
        identity::{Reservation, ReservedFor},
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

    fn none() -> Reservations {
        Reservations::default()
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
        let Answer::Offer(o) = t.discover(100, &c, None, &none()) else { panic!("no offer") };
        assert_eq!((o.addr, o.state), (addr(10), State::Offered));
        let Answer::Ack(a) = t.request(101, &c, o.addr, &none()) else { panic!("no ack") };
        assert_eq!((a.state, a.expires), (State::Bound, 101 + 3600));
        // Renewing keeps the address; another client cannot take it.
        assert!(matches!(t.request(2000, &c, o.addr, &none()), Answer::Ack(l) if l.expires == 2000 + 3600));
        assert_eq!(t.request(2001, &client(2), o.addr, &none()), Answer::Nak("address held by another client"));
        let Answer::Offer(o2) = t.discover(2002, &client(2), Some(o.addr), &none()) else { panic!() };
        assert_ne!(o2.addr, o.addr, "an asked-for address held by another is not offered");
        assert!(t.release(&c, o.addr).is_some());
        assert_eq!(
            t.request(2003, &client(3), o.addr, &none()).clone(),
            Answer::Ack(t.leases().find(|l| l.addr == o.addr).cloned().expect("lease"))
        );
    }

    #[test]
    fn declined_addresses_are_quarantined() {
        let mut t = LeaseTable::new(net(11), Limits::default());
        let c = client(1);
        let Answer::Offer(o) = t.discover(0, &c, None, &none()) else { panic!() };
        t.request(1, &c, o.addr, &none());
        assert!(t.decline(2, &c, o.addr));
        assert_eq!(t.request(3, &client(2), o.addr, &none()), Answer::Nak("address quarantined after a decline"));
        let Answer::Offer(next) = t.discover(4, &c, None, &none()) else { panic!() };
        assert_eq!(next.addr, addr(11));
        // After the quarantine the address is back.
        t.release(&c, next.addr);
        assert!(matches!(t.discover(700, &client(3), None, &none()), Answer::Offer(l) if l.addr == addr(10)));
    }

    #[test]
    fn one_mac_cannot_drain_the_pool() {
        let limits = Limits { per_mac_per_minute: 3, ..Limits::default() };
        let mut t = LeaseTable::new(net(200), limits);
        // A client spraying client identifiers from one MAC.
        let offers = (0..10u8)
            .filter(|i| {
                matches!(
                    t.discover(0, &Client::new([2, 0, 0, 0, 0, 9], Some(&[0, *i])), None, &none()),
                    Answer::Offer(_)
                )
            })
            .count();
        assert_eq!(offers, 3);
        assert!(matches!(
            t.discover(61, &Client::new([2, 0, 0, 0, 0, 9], Some(&[1, 1])), None, &none()),
            Answer::Offer(_)
        ));
    }

    #[test]
    fn one_port_cannot_drain_the_pool() {
        let limits = Limits { per_port_per_minute: 4, ..Limits::default() };
        let mut t = LeaseTable::new(net(200), limits);
        let on = |port: &str, n: u8| Client { port: Some(port.into()), ..client(n) };
        // Random MACs behind one port: four new addresses a minute.
        let offers = (0..10u8).filter(|n| matches!(t.discover(0, &on("veth7", *n), None, &none()), Answer::Offer(_)));
        assert_eq!(offers.count(), 4);
        assert!(matches!(t.discover(0, &on("veth8", 50), None, &none()), Answer::Offer(_)), "other ports are not hit");
        // A client already holding its address renews whatever the limit.
        assert!(matches!(t.request(1, &on("veth7", 0), addr(10), &none()), Answer::Ack(_)));
        let unlimited = Limits { per_port_per_minute: 0, per_mac_per_minute: 0, ..Limits::default() };
        let mut t = LeaseTable::new(net(200), unlimited);
        assert_eq!(
            (0..100u8).filter(|n| matches!(t.discover(0, &on("p", *n), None, &none()), Answer::Offer(_))).count(),
            100
        );
    }

    #[test]
    fn allocation_continues_after_the_last_address_handed_out() {
        let mut t = LeaseTable::new(net(13), Limits::default());
        let got: Vec<u8> = (1..=4u8)
            .map(|n| match t.discover(0, &client(n), None, &none()) {
                Answer::Offer(l) => l.addr.octets()[3],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [10, 11, 12, 13]);
        assert_eq!(t.discover(0, &client(5), None, &none()), Answer::Ignore("no free address"));
        // 11 comes free; the search wraps around to it.
        assert!(t.release(&client(2), addr(11)).is_some());
        assert!(matches!(t.discover(1, &client(5), None, &none()), Answer::Offer(l) if l.addr == addr(11)));
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
        let Answer::Offer(o) = t.discover(0, &client(1), None, &Reservations::new([r.clone()])) else { panic!() };
        assert_eq!(o.addr, addr(11), "the first pool address is reserved");
        assert_eq!(
            t.request(1, &client(1), addr(10), &Reservations::new([r.clone()])),
            Answer::Nak("address reserved for another client")
        );
        let Answer::Offer(mine) = t.discover(2, &client(7), None, &Reservations::new([r.clone()])) else { panic!() };
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
            port: None,
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
            let rs = Reservations::new([reserved]);
            let mut t = LeaseTable::new(net(14), Limits::default());
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Discover(c, a) => {
                        // A client with a reservation gets that address or nothing.
                        let answer = t.discover(now, &client(c), a.map(addr), &rs);
                        if answer == Answer::Ignore("no free address") && rs.for_client(&client(c)).is_none() {
                            let free = (10..=14).map(addr).filter(|a| !t.by_addr.contains_key(a) && !rs.for_other(*a, &client(c)));
                            prop_assert_eq!(free.count(), 0, "a free address was missed");
                        }
                    }
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
                prop_assert_eq!(t.expiring.len(), t.by_addr.len(), "every lease is indexed by its end once");
                prop_assert!(t.leases().all(|l| t.expiring.contains(&(l.expires, l.addr))));
            }
        }
    }
}
