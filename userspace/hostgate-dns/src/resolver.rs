//! The resolver for containers: what the daemon does with a query from a
//! container network for a name outside our zones (everyone else gets
//! REFUSED from the responder: never an open resolver).
//!
//! The daemon forwards such a query to the configured upstream resolvers
//! ([`upstream_query`], [`upstream_reply`]) and keeps the upstream's whole
//! response in a [`Cache`] (so a negative answer keeps its SOA, and rcode
//! and flags pass through as the upstream gave them), answering later
//! queries from it with the TTLs counted down. Our own zones always come
//! first: the cache never holds a name we are authoritative for, since
//! such a query never reaches it.
//!
//! Why not hickory-resolver: it hands back records, not responses, so
//! the upstream's rcode, authority section and flags would have to be
//! rebuilt for the client; and its forwarder lost about half of a dnsperf
//! run's queries (hickory-dns#2613). The wire work here is hickory-proto.
//!
//! Caching follows RFC 2308 and RFC 1035: a positive answer lives for the
//! smallest TTL of its records, a negative one (NXDOMAIN, NODATA) for
//! min(SOA TTL, SOA MINIMUM); answers without either, truncated ones and
//! errors are not kept. Both are capped (`max_ttl`, `negative_max_ttl`).
//! The table is bounded: the oldest entry goes first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::lookup::key_of;
use crate::respond::{self, Config, Counters, Transport};

/// The EDNS payload size we ask upstreams for (DNS flag day 2020).
const UPSTREAM_PAYLOAD: u16 = 1232;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Responses kept at most; the oldest goes first.
    pub max_entries: usize,
    /// A positive answer is kept at most this long (seconds).
    pub max_ttl: u32,
    /// A negative answer is kept at most this long (seconds; RFC 2308 §5
    /// suggests 1-3 hours at most).
    pub negative_max_ttl: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_entries: 10_000, max_ttl: 86_400, negative_max_ttl: 3_600 }
    }
}

/// What a response is cached under: the question (lowercased name, type,
/// class), the DO bit, which changes what the upstream sends, and the CD
/// bit, which changes what a validating upstream lets through: an answer
/// fetched with CD=1 may be one validation would have refused (SERVFAIL),
/// so it never answers a CD=0 query (RFC 4035 §4.7); one fetched with
/// CD=0 passed validation and answers both.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl Key {
    fn of(q: &Query, query: &Message) -> Key {
        Key {
            name: key_of(q.name()),
            qtype: q.query_type().into(),
            qclass: q.query_class().into(),
            dnssec_ok: dnssec_ok(query),
            checking_disabled: query.metadata.checking_disabled,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    response: Message,
    stored_ms: u64,
    ttl: u32,
    /// Which insertion this is, so that the eviction queue's stale
    /// mentions of a replaced entry are skipped.
    generation: u64,
}

/// The responses of upstream resolvers, by question. Time is passed in
/// (monotonic milliseconds), as for RRL.
#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    entries: HashMap<Key, Entry>,
    /// Insertion order, for eviction.
    order: VecDeque<(Key, u64)>,
    generation: u64,
}

impl Cache {
    pub fn new(config: CacheConfig) -> Self {
        Cache { config, entries: HashMap::new(), order: VecDeque::new(), generation: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached response to `query` with its TTLs counted down, if one
    /// is still fresh.
    pub fn get(&mut self, query: &Message, now_ms: u64) -> Option<Message> {
        let q = query.queries.first()?;
        let mut key = Key::of(q, query);
        if key.checking_disabled && !self.entries.contains_key(&key) {
            // a validated answer serves a CD=1 query too
            key.checking_disabled = false;
        }
        let entry = self.entries.get(&key)?;
        let age = u32::try_from(now_ms.saturating_sub(entry.stored_ms) / 1000).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            self.entries.remove(&key);
            return None;
        }
        let mut response = entry.response.clone();
        for r in response.answers.iter_mut().chain(&mut response.authorities).chain(&mut response.additionals) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(response)
    }

    /// Keeps the upstream's `response` to `query` if it may be cached.
    pub fn insert(&mut self, query: &Message, response: &Message, now_ms: u64) {
        let Some(q) = query.queries.first() else { return };
        let Some(ttl) = cache_ttl(response, &self.config) else { return };
        if ttl == 0 || self.config.max_entries == 0 {
            return;
        }
        let key = Key::of(q, query);
        self.generation += 1;
        let mut response = response.clone();
        // kept without what belongs to the exchange with the upstream
        response.edns = None;
        response.signature = None;
        self.entries.insert(key.clone(), Entry { response, stored_ms: now_ms, ttl, generation: self.generation });
        self.order.push_back((key, self.generation));
        while self.entries.len() > self.config.max_entries {
            let Some((old, generation)) = self.order.pop_front() else { break };
            if self.entries.get(&old).is_some_and(|e| e.generation == generation) {
                self.entries.remove(&old);
            }
        }
        // the queue also holds mentions of replaced entries: keep it bounded
        if self.order.len() > 2 * self.config.max_entries.max(16) {
            let entries = &self.entries;
            self.order.retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(CacheConfig::default())
    }
}

/// Who may use the resolver: container networks (prefixes) and single
/// container addresses. IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clients {
    prefixes: Vec<(IpAddr, u8)>,
    hosts: HashSet<IpAddr>,
}

impl Clients {
    pub fn new(prefixes: impl IntoIterator<Item = (IpAddr, u8)>, hosts: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut prefixes: Vec<(IpAddr, u8)> = prefixes.into_iter().map(|(a, l)| (a.to_canonical(), l)).collect();
        prefixes.sort();
        prefixes.dedup();
        Clients { prefixes, hosts: hosts.into_iter().map(|a| a.to_canonical()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty() && self.hosts.is_empty()
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.hosts.contains(&addr) || self.prefixes.iter().any(|(net, len)| in_prefix(addr, *net, *len))
    }
}

fn in_prefix(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    let (a, n, bits) = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)) << 96, u128::from(u32::from(n)) << 96, 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let len = u32::from(len.min(bits));
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    a & mask == n & mask
}

fn dnssec_ok(m: &Message) -> bool {
    m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)
}

/// How long `response` may be cached, in seconds; `None`: not at all.
pub fn cache_ttl(response: &Message, config: &CacheConfig) -> Option<u32> {
    if response.metadata.truncation || response.metadata.message_type != MessageType::Response {
        return None;
    }
    let negative = match response.metadata.response_code {
        ResponseCode::NXDomain => true,
        ResponseCode::NoError => response.answers.is_empty(),
        _ => return None,
    };
    if negative {
        // RFC 2308 §5: the SOA's TTL, at most its MINIMUM; no SOA, no caching
        let soa = response.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })?;
        return Some(soa.min(config.negative_max_ttl));
    }
    let min = response.answers.iter().chain(&response.authorities).chain(&response.additionals).map(|r| r.ttl).min()?;
    Some(min.min(config.max_ttl))
}

/// Whether a query may go to the upstreams at all: a plain recursive
/// QUERY of class IN for one name (transfers and meta types are not
/// forwarded).
pub fn forwardable(query: &Message) -> bool {
    let [q] = &query.queries[..] else { return false };
    query.metadata.op_code == OpCode::Query
        && query.metadata.recursion_desired
        && query.edns.as_ref().is_none_or(|e| e.version() == 0)
        && q.query_class() == hickory_proto::rr::DNSClass::IN
        && !matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR | RecordType::OPT)
}

/// The query sent upstream for a client's `query`: its question under our
/// own `id`, RD=1, EDNS with the client's DO bit and CD as the client set.
pub fn upstream_query(query: &Message, id: u16) -> Option<Vec<u8>> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.checking_disabled = query.metadata.checking_disabled;
    m.queries = query.queries.clone();
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    edns.flags_mut().dnssec_ok = dnssec_ok(query);
    m.edns = Some(edns);
    m.to_vec().ok()
}

/// The upstream's answer to our query `id` for `query`'s question, or
/// `None` for anything else (a stray or forged packet: keep waiting).
pub fn upstream_reply(bytes: &[u8], id: u16, query: &Message) -> Option<Message> {
    let m = Message::from_vec(bytes).ok()?;
    let (Some(asked), [got]) = (query.queries.first(), &m.queries[..]) else { return None };
    let same = m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && got.query_type() == asked.query_type()
        && got.query_class() == asked.query_class()
        && key_of(got.name()) == key_of(asked.name());
    same.then_some(m)
}

/// The reply to the client from an upstream's (or the cache's) response:
/// the client's id, question and RD; RA=1, AA=0; our EDNS if the client
/// sent one; within the client's size limit (else TC=1). Counts its rcode.
pub fn client_reply(
    query: &Message,
    upstream: Message,
    config: &Config,
    transport: Transport,
    counters: &mut Counters,
) -> Option<Vec<u8>> {
    let mut m = upstream;
    m.metadata.id = query.metadata.id;
    m.metadata.message_type = MessageType::Response;
    m.metadata.op_code = OpCode::Query;
    m.metadata.authoritative = false;
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = query.metadata.checking_disabled;
    m.queries = query.queries.clone();
    m.signature = None;
    m.edns = query.edns.as_ref().map(|e| {
        let mut ours = Edns::new();
        ours.set_max_payload(config.udp_payload_max.max(512));
        ours.flags_mut().dnssec_ok = e.flags().dnssec_ok;
        ours
    });
    respond::finish(m, config, query, transport, counters)
}

/// What the resolver is asked when our answer's CNAME chain leaves our
/// zones ([`respond::Responded::Chase`]): the client's query for the
/// chain's target (type, class, flags and EDNS as the client sent them).
pub fn chase_query(query: &Message, target: &hickory_proto::rr::Name) -> Message {
    let mut m = query.clone();
    for q in &mut m.queries {
        q.set_name(target.clone());
    }
    m
}

/// The client's reply to a chased CNAME: our chain, then the upstream's
/// (or the cache's) answer for its target, with that answer's rcode
/// (NXDOMAIN if the target does not exist: RFC 6604) and authority; not
/// authoritative, RA=1, as any forwarded answer.
pub fn chased_reply(
    query: &Message,
    ours: Vec<hickory_proto::rr::Record>,
    upstream: Message,
    config: &Config,
    transport: Transport,
    counters: &mut Counters,
) -> Option<Vec<u8>> {
    let mut m = upstream;
    let mut answers = ours;
    answers.append(&mut m.answers);
    m.answers = answers;
    client_reply(query, m, config, transport, counters)
}

/// SERVFAIL for the client: no upstream answered.
pub fn servfail(query: &Message, config: &Config, transport: Transport, counters: &mut Counters) -> Option<Vec<u8>> {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.response_code = ResponseCode::ServFail;
    client_reply(query, m, config, transport, counters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, Record};
    use std::str::FromStr;

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        m
    }

    fn a(name: &str, ttl: u32) -> Record {
        Record::from_rdata(Name::from_str(name).unwrap(), ttl, RData::A(A::new(203, 0, 113, 5)))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_str("example.org.").unwrap();
        Record::from_rdata(n.clone(), ttl, RData::SOA(SOA::new(n.clone(), n, 1, 3600, 600, 86400, minimum)))
    }

    fn response(q: &Message, rcode: ResponseCode, answers: Vec<Record>, authority: Vec<Record>) -> Message {
        let mut m = Message::response(99, OpCode::Query);
        m.queries = q.queries.clone();
        m.metadata.response_code = rcode;
        m.answers = answers;
        m.authorities = authority;
        m
    }

    #[test]
    fn ttls_follow_rfc_2308() {
        let c = CacheConfig::default();
        let q = query("www.example.org.", RecordType::A);
        let pos =
            response(&q, ResponseCode::NoError, vec![a("www.example.org.", 300), a("www.example.org.", 60)], vec![]);
        assert_eq!(cache_ttl(&pos, &c), Some(60));
        let nx = response(&q, ResponseCode::NXDomain, vec![], vec![soa(900, 120)]);
        assert_eq!(cache_ttl(&nx, &c), Some(120));
        let nodata = response(&q, ResponseCode::NoError, vec![], vec![soa(30, 120)]);
        assert_eq!(cache_ttl(&nodata, &c), Some(30));
        assert_eq!(cache_ttl(&response(&q, ResponseCode::NXDomain, vec![], vec![]), &c), None, "no SOA");
        assert_eq!(cache_ttl(&response(&q, ResponseCode::ServFail, vec![], vec![]), &c), None);
        let mut tc = pos.clone();
        tc.metadata.truncation = true;
        assert_eq!(cache_ttl(&tc, &c), None);
        let long = response(&q, ResponseCode::NoError, vec![a("www.example.org.", 1_000_000)], vec![]);
        assert_eq!(cache_ttl(&long, &c), Some(86_400));
    }

    #[test]
    fn hits_count_ttls_down_and_expire() {
        let mut cache = Cache::new(CacheConfig::default());
        let q = query("www.example.org.", RecordType::A);
        cache.insert(&q, &response(&q, ResponseCode::NoError, vec![a("www.example.org.", 60)], vec![]), 1_000);
        let mixed = query("WWW.Example.ORG.", RecordType::A);
        let hit = cache.get(&mixed, 11_500).expect("fresh, case-insensitive");
        assert_eq!(hit.answers[0].ttl, 50);
        assert!(cache.get(&query("www.example.org.", RecordType::AAAA), 2_000).is_none(), "another type");
        assert!(cache.get(&q, 61_000).is_none(), "expired");
        assert!(cache.is_empty(), "expired entries go");
    }

    #[test]
    fn checking_disabled_answers_never_reach_validating_queries() {
        let mut cache = Cache::new(CacheConfig::default());
        let plain = query("www.example.org.", RecordType::A);
        let mut cd = plain.clone();
        cd.metadata.checking_disabled = true;
        // fetched with CD=1: for CD=1 queries only
        cache.insert(&cd, &response(&cd, ResponseCode::NoError, vec![a("www.example.org.", 60)], vec![]), 0);
        assert!(cache.get(&plain, 0).is_none(), "unvalidated data for a CD=0 query");
        assert!(cache.get(&cd, 0).is_some());
        // fetched with CD=0 (validated): for both
        let other = query("ftp.example.org.", RecordType::A);
        let mut other_cd = other.clone();
        other_cd.metadata.checking_disabled = true;
        cache.insert(&other, &response(&other, ResponseCode::NoError, vec![a("ftp.example.org.", 60)], vec![]), 0);
        assert!(cache.get(&other, 0).is_some());
        assert!(cache.get(&other_cd, 0).is_some());
    }

    #[test]
    fn a_chased_cname_goes_in_front_of_the_upstreams_answer() {
        let q = query("out.example.com.", RecordType::A);
        let target = Name::from_str("www.example.org.").unwrap();
        let asked = chase_query(&q, &target);
        assert_eq!((asked.queries[0].name(), asked.queries[0].query_type()), (&target, RecordType::A));
        assert_eq!(asked.metadata.id, q.metadata.id);
        let cname = Record::from_rdata(
            Name::from_str("out.example.com.").unwrap(),
            300,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(target.clone())),
        );
        let upstream = response(&asked, ResponseCode::NoError, vec![a("www.example.org.", 60)], vec![]);
        let mut counters = Counters::default();
        let reply =
            chased_reply(&q, vec![cname.clone()], upstream, &Config::default(), Transport::Udp, &mut counters).unwrap();
        let r = Message::from_vec(&reply).unwrap();
        assert_eq!(r.queries, q.queries, "the client's question");
        assert_eq!(r.answers.iter().map(|r| r.record_type()).collect::<Vec<_>>(), [RecordType::CNAME, RecordType::A]);
        assert!(!r.metadata.authoritative && r.metadata.recursion_available);
        let nx = response(&asked, ResponseCode::NXDomain, vec![], vec![soa(300, 60)]);
        let reply = chased_reply(&q, vec![cname], nx, &Config::default(), Transport::Udp, &mut counters).unwrap();
        let r = Message::from_vec(&reply).unwrap();
        assert_eq!((r.metadata.response_code, r.answers.len(), r.authorities.len()), (ResponseCode::NXDomain, 1, 1));
        assert_eq!((counters.noerror, counters.nxdomain), (1, 1));
    }

    #[test]
    fn the_oldest_goes_first_when_full() {
        let mut cache = Cache::new(CacheConfig { max_entries: 3, ..CacheConfig::default() });
        for i in 0..5 {
            let q = query(&format!("n{i}.example.org."), RecordType::A);
            cache.insert(&q, &response(&q, ResponseCode::NoError, vec![a("x.example.org.", 60)], vec![]), 0);
            // replacing an entry leaves a stale mention in the queue
            cache.insert(&q, &response(&q, ResponseCode::NoError, vec![a("x.example.org.", 60)], vec![]), 0);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&query("n1.example.org.", RecordType::A), 0).is_none());
        assert!(cache.get(&query("n4.example.org.", RecordType::A), 0).is_some());
        assert!(cache.order.len() <= 32);
    }

    #[test]
    fn upstream_replies_must_match_id_and_question() {
        let q = query("www.example.org.", RecordType::A);
        let mut r = response(&q, ResponseCode::NoError, vec![a("www.example.org.", 60)], vec![]);
        r.metadata.id = 42;
        let bytes = r.to_vec().unwrap();
        assert!(upstream_reply(&bytes, 42, &q).is_some());
        assert!(upstream_reply(&bytes, 43, &q).is_none(), "another id");
        assert!(upstream_reply(&bytes, 42, &query("www.example.org.", RecordType::AAAA)).is_none());
        assert!(upstream_reply(&bytes, 42, &query("other.example.org.", RecordType::A)).is_none());
        assert!(upstream_reply(&[1, 2, 3], 42, &q).is_none());
        let sent = Message::from_vec(&upstream_query(&q, 42).unwrap()).unwrap();
        assert_eq!((sent.metadata.id, sent.metadata.recursion_desired, sent.edns.is_some()), (42, true, true));
    }

    #[test]
    fn client_replies_are_recursive_and_not_authoritative() {
        let mut q = query("WWW.example.org.", RecordType::A);
        q.metadata.id = 0xbeef;
        let mut up = response(&q, ResponseCode::NoError, vec![a("www.example.org.", 60)], vec![]);
        up.metadata.authoritative = true;
        let mut counters = Counters::default();
        let bytes = client_reply(&q, up, &Config::default(), Transport::Udp, &mut counters).unwrap();
        let r = Message::from_vec(&bytes).unwrap();
        assert_eq!(r.metadata.id, 0xbeef);
        assert!(r.metadata.recursion_available && r.metadata.recursion_desired && !r.metadata.authoritative);
        assert!(r.queries[0].name().eq_case(&Name::from_str("WWW.example.org.").unwrap()));
        assert!(r.edns.is_none());
        assert_eq!((r.answers.len(), counters.noerror), (1, 1));
        let fail =
            Message::from_vec(&servfail(&q, &Config::default(), Transport::Udp, &mut counters).unwrap()).unwrap();
        assert_eq!(fail.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn clients_are_prefixes_and_hosts() {
        let c = Clients::new(
            [("198.51.100.4".parse().unwrap(), 30), ("2001:db8:51:1::".parse().unwrap(), 64)],
            ["203.0.113.9".parse().unwrap()],
        );
        for yes in ["198.51.100.6", "198.51.100.7", "2001:db8:51:1::2", "203.0.113.9", "::ffff:198.51.100.5"] {
            assert!(c.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["198.51.100.8", "198.18.0.2", "2001:db8:51:2::2", "203.0.113.10", "::"] {
            assert!(!c.contains(no.parse().unwrap()), "{no}");
        }
        assert!(!Clients::default().contains("198.51.100.6".parse().unwrap()));
        assert!(Clients::new([("0.0.0.0".parse().unwrap(), 0)], []).contains("198.18.0.2".parse().unwrap()));
    }

    #[test]
    fn only_recursive_in_queries_are_forwarded() {
        assert!(forwardable(&query("www.example.org.", RecordType::A)));
        let mut norec = query("www.example.org.", RecordType::A);
        norec.metadata.recursion_desired = false;
        assert!(!forwardable(&norec));
        assert!(!forwardable(&query("example.org.", RecordType::AXFR)));
        let mut notify = query("example.org.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        assert!(!forwardable(&notify));
    }
}
