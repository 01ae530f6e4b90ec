//! The UDP fast path: a per-worker cache of whole replies, keyed by the
//! query's bytes after its ID.
//!
//! [`respond::respond`] decodes every query with hickory-proto, looks it
//! up and encodes a new message: some 5 µs a query, most of it in the
//! decoder and encoder's allocations and name compression. NSD and Knot
//! answer from wire data prepared in advance instead. Here the responder
//! itself prepares it, once per distinct query: a query's reply depends
//! only on its bytes (the ID aside, which the reply echoes in its first
//! two bytes and nowhere else), the catalog and the configuration, so
//! [`respond::compile`]'s result for one query is the reply to every query
//! with the same bytes after the ID, until the catalog changes. A hit
//! costs a hash of the query, a compare and a copy; the reply is
//! byte-for-byte what the responder would have built (the property test
//! below checks exactly that, RRL and counters included).
//!
//! Why key on the bytes rather than on a parsed, lowercased question:
//! hickory's encoder compresses names case-sensitively, so a reply to
//! `WWW.example.com` is not the reply to `www.example.com` with the
//! question's case patched in; the whole query as the key makes equality
//! hold by construction, whatever the responder does. A resolver that
//! randomises the case (DNS 0x20) still gets the right answer, at the
//! responder's cost.
//!
//! Bounded: a fixed number of slots, each holding one entry (a colliding
//! query takes the slot over, as in a direct-mapped CPU cache), and a
//! byte budget for what the entries hold; queries longer than
//! [`MAX_QUERY`] and replies longer than [`MAX_REPLY`] are answered but
//! not kept. A flood of unique names costs one insert per query and
//! evicts others, never memory. The slot index is a keyed hash, so a
//! flooder cannot aim at a victim's slot.
//!
//! RRL stays exact: each entry keeps the flow RRL accounts its reply to
//! and the slip reply, and every hit passes the worker's [`Rrl`] as the
//! responder would. Counters stay exact: each entry keeps what sending
//! its reply counts.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::catalog::Catalog;
use crate::respond::{self, Client, Compiled, Config, Counters, Transport};
use crate::rrl::{Action, Rrl};

/// Longest query kept (a question of a maximal name with an OPT fits).
pub const MAX_QUERY: usize = 320;
/// Longest reply kept (the default EDNS size limit).
pub const MAX_REPLY: usize = 1232;

/// What [`AnswerCache::answer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The reply is in the buffer given.
    Reply,
    /// Nothing to send (RRL dropped it, or the responder would not
    /// answer).
    Nothing,
    /// Not for the fast path (not a QUERY, too short, a response):
    /// [`respond::respond`] (or the daemon's own handling) answers it.
    Slow,
}

#[derive(Debug)]
struct Entry {
    /// The query after its ID.
    key: Box<[u8]>,
    compiled: Compiled,
}

impl Entry {
    fn size(&self) -> usize {
        let reply = self.compiled.reply.as_ref().map_or(0, Vec::len);
        let slip = self.compiled.limited.as_ref().and_then(|(_, s)| s.as_ref()).map_or(0, Vec::len);
        std::mem::size_of::<Entry>() + self.key.len() + reply + slip
    }
}

/// One worker's cache (not shared: no lock on the packet path).
#[derive(Debug)]
pub struct AnswerCache {
    /// The responder's configuration, which the entries depend on.
    config: Config,
    slots: Vec<Option<Box<Entry>>>,
    hasher: RandomState,
    bytes: usize,
    max_bytes: usize,
    /// The catalog generation the entries were compiled from.
    generation: u64,
    pub hits: u64,
    pub misses: u64,
}

impl AnswerCache {
    /// `slots` is rounded up to a power of two; `max_bytes` bounds what
    /// the entries hold; `config` is the responder's.
    pub fn new(config: Config, slots: usize, max_bytes: usize) -> Self {
        let slots = slots.clamp(1, 1 << 24).next_power_of_two();
        Self {
            config,
            slots: (0..slots).map(|_| None).collect(),
            hasher: RandomState::new(),
            bytes: 0,
            max_bytes,
            generation: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Forgets everything when the catalog is not the one the entries were
    /// compiled from. Call it with the catalog's generation read before
    /// the catalog itself: an entry compiled from a newer catalog than
    /// `generation` names is then dropped at the next call, never kept
    /// past a change.
    pub fn sync(&mut self, generation: u64) {
        if generation != self.generation {
            self.clear();
            self.generation = generation;
        }
    }

    pub fn clear(&mut self) {
        if self.bytes != 0 {
            self.slots.iter_mut().for_each(|s| *s = None);
        }
        self.bytes = 0;
    }

    /// Answers a UDP query as [`respond::respond`] would with the same
    /// catalog, the cache's configuration, the same RRL table and
    /// counters: the same reply bytes (into `out`), the same RRL
    /// accounting, the same counts. [`Served::Slow`] leaves all of them
    /// untouched.
    pub fn answer(
        &mut self,
        catalog: &Catalog,
        rrl: Option<&mut Rrl>,
        counters: &mut Counters,
        query: &[u8],
        client: &Client,
        out: &mut Vec<u8>,
    ) -> Served {
        debug_assert_eq!(client.transport, Transport::Udp);
        // a header, QR=0 and opcode QUERY: everything else is rare and
        // takes the responder (the daemon intercepts NOTIFY)
        let (Some(id), Some(key)) = (query.get(..2), query.get(2..)) else { return Served::Slow };
        if query.len() < 12 || key[0] & 0xf8 != 0 {
            return Served::Slow;
        }
        let slot = self.hasher.hash_one(key) as usize & (self.slots.len() - 1);
        let hit = self.slots.get(slot).and_then(Option::as_ref).is_some_and(|e| *e.key == *key);
        let compiled = if hit {
            self.hits += 1;
            match self.slots.get(slot).and_then(Option::as_ref) {
                Some(entry) => &entry.compiled,
                None => return Served::Slow,
            }
        } else {
            self.misses += 1;
            let Some(compiled) = respond::compile(catalog, &self.config, query) else { return Served::Slow };
            match self.insert(slot, key, compiled) {
                Ok(entry) => &entry.compiled,
                // not kept: served once from here
                Err(compiled) => return serve(&compiled, id, rrl, counters, client, out),
            }
        };
        serve(compiled, id, rrl, counters, client, out)
    }

    /// Keeps `compiled` in `slot` if it is small enough and the budget
    /// allows; hands it back otherwise.
    fn insert(&mut self, slot: usize, key: &[u8], compiled: Compiled) -> Result<&Entry, Box<Compiled>> {
        let reply_len = compiled.reply.as_ref().map_or(0, Vec::len);
        if key.len() + 2 > MAX_QUERY || reply_len > MAX_REPLY {
            return Err(Box::new(compiled));
        }
        let entry = Box::new(Entry { key: key.into(), compiled });
        let Some(place) = self.slots.get_mut(slot) else { return Err(Box::new(entry.compiled)) };
        let freed = place.as_ref().map_or(0, |old| old.size());
        let bytes = self.bytes - freed + entry.size();
        if bytes > self.max_bytes {
            return Err(Box::new(entry.compiled));
        }
        self.bytes = bytes;
        Ok(place.insert(entry))
    }
}

/// Sends (into `out`) and counts a compiled reply as the responder would:
/// RRL first, then the reply with the query's ID.
fn serve(
    compiled: &Compiled,
    id: &[u8],
    rrl: Option<&mut Rrl>,
    counters: &mut Counters,
    client: &Client,
    out: &mut Vec<u8>,
) -> Served {
    let reply = match (&compiled.limited, rrl) {
        (Some((flow, slip)), Some(rrl)) => {
            match rrl.check(client.addr, flow.class, &flow.name, flow.qtype, client.now_ms) {
                Action::Send => compiled.reply.as_ref(),
                Action::Drop => {
                    count_query(counters);
                    counters.rate_limited_dropped += 1;
                    return Served::Nothing;
                }
                Action::Slip => {
                    count_query(counters);
                    counters.rate_limited_slipped += 1;
                    return copy_with_id(slip.as_deref(), id, out);
                }
            }
        }
        _ => compiled.reply.as_ref(),
    };
    counters.add(&compiled.counted);
    copy_with_id(reply.map(Vec::as_slice), id, out)
}

/// What the responder counts of any UDP query before answering it.
fn count_query(counters: &mut Counters) {
    counters.queries += 1;
    counters.udp += 1;
}

fn copy_with_id(reply: Option<&[u8]>, id: &[u8], out: &mut Vec<u8>) -> Served {
    let Some(reply) = reply else { return Served::Nothing };
    out.clear();
    out.extend_from_slice(reply);
    if let (Some(to), Some(id)) = (out.get_mut(..2), id.get(..2)) {
        to.copy_from_slice(id);
    }
    Served::Reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::IndexedZone;
    use crate::rrl::RrlConfig;
    use crate::zone::Zone;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{rdata, DNSClass, Name, RData, Record, RecordType};
    use proptest::prelude::*;
    use std::str::FromStr;

    fn catalog_of(zones: &[Zone]) -> Catalog {
        zones.iter().map(IndexedZone::new).collect()
    }

    fn test_catalog() -> Catalog {
        let origin = Name::from_str("example.com.").unwrap();
        let zone = crate::master::parse(crate::lookup::tests::ZONE, "t", &origin).unwrap();
        catalog_of(&[zone])
    }

    fn query(name: &str, qtype: RecordType, id: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn client(now_ms: u64) -> Client {
        Client { addr: "198.51.100.7".parse().unwrap(), transport: Transport::Udp, now_ms }
    }

    #[test]
    fn a_hit_is_the_responders_reply_with_the_new_id() {
        let catalog = test_catalog();
        let config = Config::default();
        let mut cache = AnswerCache::new(Config::default(), 64, 1 << 20);
        let mut out = Vec::new();
        let (mut fast, mut slow) = (Counters::default(), Counters::default());
        for id in [1u16, 2, 0xbeef] {
            let q = query("www.example.com.", RecordType::A, id, Some(1232));
            let served = cache.answer(&catalog, None, &mut fast, &q, &client(0), &mut out);
            let expected = respond::respond(&catalog, &config, None, &mut slow, &q, &client(0));
            assert_eq!(served, Served::Reply);
            assert_eq!(Some(&out), expected.as_ref());
            assert_eq!(&out[..2], &id.to_be_bytes());
        }
        assert_eq!((cache.hits, cache.misses), (2, 1));
        assert_eq!(fast, slow);
        assert_eq!(fast.queries, 3);
    }

    #[test]
    fn a_new_generation_empties_it() {
        let catalog = test_catalog();
        let mut cache = AnswerCache::new(Config::default(), 64, 1 << 20);
        let mut out = Vec::new();
        let q = query("www.example.com.", RecordType::A, 7, None);
        cache.sync(1);
        cache.answer(&catalog, None, &mut Counters::default(), &q, &client(0), &mut out);
        assert_eq!(cache.len(), 1);
        cache.sync(1);
        assert_eq!(cache.len(), 1);
        cache.sync(2);
        assert!(cache.is_empty());
        assert_eq!(cache.len(), 0);
        // the new catalog answers: REFUSED now that the zone is gone
        let served = cache.answer(&Catalog::new(), None, &mut Counters::default(), &q, &client(0), &mut out);
        assert_eq!(served, Served::Reply);
        assert_eq!(out[3] & 0x0f, 5);
    }

    #[test]
    fn the_byte_budget_holds() {
        let catalog = test_catalog();
        let mut cache = AnswerCache::new(Config::default(), 1024, 600);
        let mut out = Vec::new();
        for i in 0..100 {
            let q = query(&format!("n{i}.example.com."), RecordType::A, 1, None);
            let served = cache.answer(&catalog, None, &mut Counters::default(), &q, &client(0), &mut out);
            assert_eq!(served, Served::Reply, "answered even when not kept");
            assert!(cache.bytes <= 600);
        }
        assert!(cache.len() < 100 && !cache.is_empty());
    }

    #[test]
    fn notify_responses_and_runts_take_the_slow_path() {
        let catalog = test_catalog();
        let mut cache = AnswerCache::new(Config::default(), 64, 1 << 20);
        let mut out = Vec::new();
        let mut counters = Counters::default();
        let mut notify = query("example.com.", RecordType::SOA, 1, None);
        notify[2] |= 4 << 3;
        let mut response = query("example.com.", RecordType::SOA, 1, None);
        response[2] |= 0x80;
        for q in [&notify[..], &response[..], &[0u8; 11][..], &[][..]] {
            let served = cache.answer(&catalog, None, &mut counters, q, &client(0), &mut out);
            assert_eq!(served, Served::Slow);
        }
        assert_eq!(counters, Counters::default(), "nothing counted twice");
    }

    /// The responder and the cache side by side, each with its own RRL
    /// table (same configuration) and counters: every reply and every
    /// count equal, after each query.
    fn same_as_responder(
        catalog: &Catalog,
        config: &Config,
        rrl: Option<RrlConfig>,
        slots: usize,
        queries: &[(Vec<u8>, u64)],
    ) -> Result<(), TestCaseError> {
        let mut slow_rrl = rrl.clone().map(|c| Rrl::new(c, 42));
        let mut fast_rrl = rrl.map(|c| Rrl::new(c, 42));
        let (mut slow_counters, mut fast_counters) = (Counters::default(), Counters::default());
        let mut cache = AnswerCache::new(config.clone(), slots, 1 << 20);
        let mut out = Vec::new();
        for (bytes, now_ms) in queries {
            let c = client(*now_ms);
            let slow = respond::respond(catalog, config, slow_rrl.as_mut(), &mut slow_counters, bytes, &c);
            let fast = match cache.answer(catalog, fast_rrl.as_mut(), &mut fast_counters, bytes, &c, &mut out) {
                Served::Reply => Some(out.clone()),
                Served::Nothing => None,
                Served::Slow => respond::respond(catalog, config, fast_rrl.as_mut(), &mut fast_counters, bytes, &c),
            };
            prop_assert_eq!(&fast, &slow, "query {:?}", bytes);
            prop_assert_eq!(&fast_counters, &slow_counters);
        }
        Ok(())
    }

    #[test]
    fn rate_limited_hits_slip_and_drop_as_the_responder() {
        let catalog = test_catalog();
        let q = query("www.example.com.", RecordType::A, 9, Some(1232));
        let nx = query("nope.example.com.", RecordType::A, 9, None);
        let queries: Vec<(Vec<u8>, u64)> =
            (0..40).map(|i| (if i % 3 == 0 { nx.clone() } else { q.clone() }, i * 50)).collect();
        let rrl = RrlConfig { responses_per_second: 3, slip: 2, ..RrlConfig::default() };
        same_as_responder(&catalog, &Config::default(), Some(rrl), 64, &queries).unwrap();
    }

    const LABELS: &[&str] = &["a", "b", "*", "C", "www", "mail"];

    fn owner(labels: &[usize]) -> Name {
        let origin = Name::from_str("example.com.").unwrap();
        labels.iter().fold(origin, |n, l| n.prepend_label(LABELS[l % LABELS.len()]).unwrap())
    }

    /// A zone from random records of many types (CNAMEs, delegations,
    /// wildcards, RRsets too big for UDP), dropping what validation
    /// refuses.
    fn valid_zone(records: &[(Vec<usize>, u8)]) -> Zone {
        let origin = Name::from_str("example.com.").unwrap();
        let soa = "@ 60 SOA ns1 h 1 1 1 1 1\n@ 60 NS ns1\nns1 60 A 198.51.100.1\n@ 60 MX 10 mail\n";
        let base = crate::master::parse(soa, "t", &origin).unwrap();
        let mut all: Vec<Record> = base.records().collect();
        for (labels, kind) in records {
            let name = owner(labels);
            let target = owner(&[usize::from(*kind) % 7, 4]);
            let data: Vec<RData> = match kind % 8 {
                0 | 1 => vec![RData::A(std::net::Ipv4Addr::new(198, 51, 100, *kind).into())],
                2 => vec![RData::AAAA(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(*kind)).into())],
                3 => vec![RData::TXT(rdata::TXT::new(vec![format!("t{kind}")]))],
                4 => vec![RData::NS(rdata::NS(Name::from_str("ns.example.net.").unwrap()))],
                5 => vec![RData::CNAME(rdata::CNAME(target))],
                6 => vec![RData::MX(rdata::MX::new(10, target))],
                // big: truncated over UDP without EDNS, or with it
                _ => (0..usize::from(*kind % 32) + 4)
                    .map(|i| RData::TXT(rdata::TXT::new(vec![format!("{i:02}{}", "x".repeat(60))])))
                    .collect(),
            };
            for d in data {
                let mut r = Record::from_rdata(name.clone(), 60, d);
                r.dns_class = DNSClass::IN;
                all.push(r);
            }
        }
        loop {
            match Zone::new(origin.clone(), all.clone()) {
                Ok(zone) => return zone,
                Err(errors) => {
                    let bad: Vec<usize> = errors.iter().filter_map(|e| e.record).collect();
                    assert!(!bad.is_empty(), "{errors:?}");
                    all = all.into_iter().enumerate().filter(|(i, _)| !bad.contains(i)).map(|(_, r)| r).collect();
                }
            }
        }
    }

    /// A query's bytes: a name below (or outside) the zone in some case,
    /// a type, a class, flags, EDNS or not; sometimes mangled.
    fn arb_query() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(0usize..LABELS.len(), 0..4),
            any::<bool>(),
            prop_oneof![Just("example.com."), Just("EXAMPLE.com."), Just("example.org."), Just("com.")],
            prop_oneof![
                Just(RecordType::A),
                Just(RecordType::AAAA),
                Just(RecordType::TXT),
                Just(RecordType::MX),
                Just(RecordType::NS),
                Just(RecordType::SOA),
                Just(RecordType::CNAME),
                Just(RecordType::ANY),
                Just(RecordType::AXFR),
                Just(RecordType::DS)
            ],
            (0u16..4, any::<u16>(), any::<u8>(), proptest::option::of((0u16..5000, 0u8..2, any::<bool>()))),
            proptest::option::of((0usize..80, any::<u8>())),
        )
            .prop_map(|(labels, upper, suffix, qtype, (class, id, flags, edns), mangle)| {
                let mut name = labels.iter().map(|l| format!("{}.", LABELS[*l])).collect::<String>() + suffix;
                if upper {
                    name = name.to_uppercase();
                }
                let mut m = Message::new(id, MessageType::Query, OpCode::Query);
                let mut q = Query::query(Name::from_str(&name).unwrap(), qtype);
                q.set_query_class(match class {
                    0 | 1 => DNSClass::IN,
                    2 => DNSClass::CH,
                    _ => DNSClass::ANY,
                });
                m.add_query(q);
                if let Some((size, version, dnssec_ok)) = edns {
                    let mut e = Edns::new();
                    e.set_max_payload(size);
                    e.set_version(version);
                    e.set_dnssec_ok(dnssec_ok);
                    m.set_edns(e);
                }
                let mut bytes = m.to_vec().unwrap();
                // RD, CD, AD and the rest of the flags as they come (QR
                // and the opcode too, now and then)
                bytes[2] = flags & if flags & 0x40 == 0 { 0x01 } else { 0xff };
                bytes[3] = flags.rotate_left(3) & 0x30;
                if let Some((at, byte)) = mangle {
                    if let Some(b) = bytes.get_mut(at) {
                        *b = byte;
                    }
                }
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The fast path's replies and counts are exactly the responder's,
        /// over generated zones and queries (repeated, so that most are
        /// hits), with and without RRL, in caches small enough to evict.
        #[test]
        fn fast_path_is_byte_for_byte_the_responder(
            records in proptest::collection::vec((proptest::collection::vec(0usize..LABELS.len(), 0..3), any::<u8>()), 0..16),
            distinct in proptest::collection::vec(arb_query(), 1..24),
            picks in proptest::collection::vec((any::<proptest::sample::Index>(), 0u64..400), 1..120),
            rrl in proptest::option::of((1u32..6, 0u32..3)),
            slots in prop_oneof![Just(4usize), Just(1024)],
            payload_max in prop_oneof![Just(1232u16), Just(512), Just(4096)],
        ) {
            let catalog = catalog_of(&[valid_zone(&records)]);
            let config = Config { udp_payload_min: 512, udp_payload_max: payload_max };
            let mut now = 0;
            let queries: Vec<(Vec<u8>, u64)> = picks
                .iter()
                .map(|(i, step)| {
                    now += step;
                    (distinct[i.index(distinct.len())].clone(), now)
                })
                .collect();
            let rrl = rrl.map(|(rate, slip)| RrlConfig { responses_per_second: rate, slip, table_size: 64, ..RrlConfig::default() });
            same_as_responder(&catalog, &config, rrl, slots, &queries)?;
        }

        #[test]
        fn arbitrary_bytes_are_the_responders_too(
            queries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..20),
        ) {
            let queries: Vec<(Vec<u8>, u64)> = queries.into_iter().flat_map(|q| [(q.clone(), 0), (q, 1)]).collect();
            same_as_responder(&test_catalog(), &Config::default(), None, 16, &queries)?;
        }
    }
}
