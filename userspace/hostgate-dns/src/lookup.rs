//! An immutable, indexed zone answering (qname, qtype) with NSD/BIND
//! semantics, in O(labels x log n) on hits and misses alike.
//!
//! The index is one `BTreeMap` holding every name that exists: owners of
//! records and every empty non-terminal between them and the apex, keyed
//! by the name's labels from the root down (lower case, so that every
//! ancestor's key is a prefix of the name's). A name exists iff it is a
//! key, so finding the closest encloser is a walk down the qname's labels
//! with one map lookup per label, stopping at the first missing one
//! (nothing exists below a name that does not exist). No answer ever scans the zone: that is the
//! O(zone) trap in hickory-server's in-memory handler on every miss.
//!
//! Semantics:
//! - exact match: the RRset, AA; additional A/AAAA for in-zone MX, SRV and
//!   NS targets (never from below a cut, never from wildcards);
//! - CNAME: followed within the zone, at most [`MAX_CHAIN`] links, loops
//!   stopped; the rcode is the last link's (RFC 6604: NXDOMAIN at the end
//!   of a chain is NXDOMAIN);
//! - wildcards (RFC 4592): `*.<closest encloser>` only when the qname does
//!   not exist (an empty non-terminal exists and stops it); the answer's
//!   owner is the qname; wildcard NODATA is NOERROR + SOA;
//! - empty non-terminal: NODATA (NOERROR + SOA), never NXDOMAIN;
//! - negative answers: SOA in authority with TTL = min(SOA TTL, minimum)
//!   (RFC 2308 §3);
//! - delegation (NS below the apex) at or above the qname: a referral, no
//!   AA, the cut's NS in authority and in-bailiwick glue in additional;
//!   nothing at or below a cut is answered from this zone;
//! - qtype ANY: one RRset (RFC 8482 §4.1), the SOA at the apex, else the
//!   one of the lowest type code, on every transport: what NSD 4.6 does
//!   (checked side by side with `examples/compare.rs`). ANY is an
//!   amplification tool and no resolver needs all of a name's data.
//! - positive answers carry no NS in authority and no NS addresses in
//!   additional (minimal responses, as Knot and BIND's
//!   `minimal-responses no-auth` do). NSD 4.6 adds the apex NS RRset and
//!   its glue to every positive answer: nothing a resolver needs (it has
//!   the NS from the referral) and bytes for every reply.

use std::collections::BTreeMap;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::zone::{in_class, label_count, Zone};

/// CNAME links followed inside one answer (BIND follows 16 in all; 8 in
/// one zone is already a broken zone).
pub const MAX_CHAIN: usize = 8;

/// The kind of answer, for the header, counters and RRL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Data in the answer section (possibly only a CNAME chain leaving the
    /// zone).
    Answer,
    /// The name exists, not the type: NOERROR, SOA in authority.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// Below a delegation: NS in authority, no AA.
    Referral,
    /// Not a name of this zone: nothing (the responder says REFUSED).
    OutOfZone,
}

/// A response's sections, before it is put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// Additional records the answer is wrong without (glue of a
    /// referral): if they do not fit, the reply is truncated (RFC 9471).
    pub additional_required: bool,
    /// The name response rate limiting accounts this answer to: the qname
    /// for data, the wildcard for synthesized data, the zone for NXDOMAIN
    /// (so a random-subdomain flood is one flow), the cut for referrals.
    pub rrl_name: Name,
}

/// Records of one name.
#[derive(Clone, Debug, Default)]
struct Node {
    name: Name,
    /// (type, records) in type-code order; a handful per name.
    sets: Vec<(RecordType, Vec<Record>)>,
    /// NS below the apex.
    cut: bool,
}

impl Node {
    fn get(&self, t: RecordType) -> Option<&[Record]> {
        self.sets.iter().find(|(ty, _)| *ty == t).map(|(_, r)| r.as_slice())
    }
}

/// Where a name leads.
enum Found<'a> {
    /// The name exists (maybe an empty non-terminal).
    Exact(&'a Node),
    /// It does not, and `*.<closest encloser>` does.
    Wildcard(&'a Node),
    NxDomain,
    /// A delegation at or above it.
    Referral(&'a Node),
}

/// A name as an index key: its labels from the root down, each as a
/// length byte and the label in lower case. The key of every ancestor of
/// a name is a prefix of the name's key, so walking down the labels of a
/// qname is slicing one key, with no allocation, and each map lookup
/// compares bytes (hickory's `Name` comparison walks labels backwards and
/// was most of the time of an answer).
pub fn key_of(name: &Name) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    for label in name.iter().rev() {
        // labels are at most 63 bytes (hickory checks)
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key
}

/// The end of each label's part of a key, from the root down.
pub(crate) fn label_ends(key: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::from(*key.get(at)?);
        at = (at + 1 + len).min(key.len());
        Some(at)
    })
}

/// A zone indexed for answering. Build once, share behind an `Arc`.
#[derive(Clone, Debug)]
pub struct IndexedZone {
    origin: Name,
    origin_key: Vec<u8>,
    serial: u32,
    /// The SOA as negative answers carry it.
    negative_soa: Record,
    /// Every existing name, by [`key_of`].
    nodes: BTreeMap<Vec<u8>, Node>,
}

impl IndexedZone {
    pub fn new(zone: &Zone) -> Self {
        let origin = zone.origin().clone();
        let mut nodes: BTreeMap<Name, Node> = BTreeMap::new();
        for record in zone.records() {
            let node = nodes.entry(record.name.clone()).or_default();
            match node.sets.iter_mut().find(|(t, _)| *t == record.record_type()) {
                Some((_, records)) => records.push(record),
                None => node.sets.push((record.record_type(), vec![record])),
            }
        }
        let owners: Vec<Name> = nodes.keys().cloned().collect();
        for owner in owners {
            add_empty_non_terminals(&mut nodes, &origin, owner);
        }
        let nodes = nodes
            .into_iter()
            .map(|(name, mut node)| {
                node.sets.sort_by_key(|(t, _)| u16::from(*t));
                node.cut = name != origin && node.get(RecordType::NS).is_some();
                node.name = name;
                (key_of(&node.name), node)
            })
            .collect();
        let mut negative_soa = zone.soa_record();
        negative_soa.ttl = zone.soa_ttl().min(zone.soa().minimum);
        Self { origin_key: key_of(&origin), origin, serial: zone.soa().serial, negative_soa, nodes }
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Answers a query for a name in this zone (the catalog chose it; a
    /// name outside gets [`Outcome::OutOfZone`]).
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        let inside = self.origin.zone_of(qname);
        let mut answer = Answer {
            outcome: Outcome::OutOfZone,
            authoritative: inside,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            additional_required: false,
            rrl_name: qname.clone(),
        };
        if !inside {
            return answer;
        }
        let mut name = qname.clone();
        let mut visited: Vec<Name> = Vec::new();
        loop {
            visited.push(name.clone());
            let Some(next) = self.step(&mut answer, &name, qname, qtype) else { break };
            // a CNAME led on: follow it if it stays here and is new
            let stays = self.origin.zone_of(&next) && !visited.contains(&next);
            if !stays || visited.len() >= MAX_CHAIN {
                break;
            }
            name = next;
        }
        self.add_additional(&mut answer);
        answer
    }

    /// Answers for one name of a chain; returns a CNAME target to follow.
    fn step(&self, answer: &mut Answer, name: &Name, qname: &Name, qtype: RecordType) -> Option<Name> {
        match self.find(name, qtype) {
            Found::Referral(node) => {
                self.referral(answer, node);
                None
            }
            Found::NxDomain => {
                answer.outcome = Outcome::NxDomain;
                answer.rrl_name = self.origin.clone();
                answer.authority.push(self.negative_soa.clone());
                None
            }
            Found::Exact(node) => self.at_node(answer, node, name, qtype),
            Found::Wildcard(node) => {
                if name == qname {
                    answer.rrl_name = node.name.clone();
                }
                self.at_node(answer, node, name, qtype)
            }
        }
    }

    /// Fills the answer from a node reached as `owner`; returns a CNAME
    /// target to follow.
    fn at_node(&self, answer: &mut Answer, node: &Node, owner: &Name, qtype: RecordType) -> Option<Name> {
        let owned = |r: &Record| {
            let mut r = r.clone();
            r.name = owner.clone();
            r
        };
        if qtype == RecordType::ANY {
            // RFC 8482 §4.1, as NSD does: one RRset, the SOA at the apex
            let one = node.get(RecordType::SOA).or_else(|| node.sets.first().map(|(_, r)| r.as_slice()));
            if let Some(records) = one {
                answer.answers.extend(records.iter().map(owned));
                answer.outcome = Outcome::Answer;
                return None;
            }
        }
        if let Some(records) = node.get(qtype) {
            answer.answers.extend(records.iter().map(owned));
            answer.outcome = Outcome::Answer;
            return None;
        }
        if let Some(cname) = node.get(RecordType::CNAME) {
            answer.answers.extend(cname.iter().map(owned));
            answer.outcome = Outcome::Answer;
            return cname.first().and_then(|r| match &r.data {
                RData::CNAME(target) => Some(target.0.clone()),
                _ => None,
            });
        }
        answer.outcome = Outcome::NoData;
        answer.authority.push(self.negative_soa.clone());
        None
    }

    fn referral(&self, answer: &mut Answer, node: &Node) {
        answer.outcome = Outcome::Referral;
        // AA is about the qname's own data: a chain that reached the cut
        // from an answer of ours keeps it
        answer.authoritative = !answer.answers.is_empty();
        answer.rrl_name = node.name.clone();
        let ns = node.get(RecordType::NS).unwrap_or_default();
        answer.authority.extend(ns.iter().cloned());
        for target in ns.iter().filter_map(|r| target_of(&r.data)) {
            if self.origin.zone_of(target) {
                if let Some(glue) = self.nodes.get(&key_of(target)) {
                    push_addresses(&mut answer.additional, glue);
                }
            }
        }
        answer.additional_required = !answer.additional.is_empty();
    }

    /// A/AAAA of in-zone MX, SRV and NS targets in the answer.
    fn add_additional(&self, answer: &mut Answer) {
        let targets: Vec<Name> = answer.answers.iter().filter_map(|r| target_of(&r.data)).cloned().collect();
        for target in targets {
            if !self.origin.zone_of(&target) || answer.additional.iter().any(|r| r.name == target) {
                continue;
            }
            if let Found::Exact(node) = self.find(&target, RecordType::A) {
                push_addresses(&mut answer.additional, node);
            }
        }
    }

    /// Walks from the apex down the labels of `name`. A DS query at a cut
    /// is the parent's to answer (RFC 4035 §3.1.4.1), so no referral then.
    fn find(&self, name: &Name, qtype: RecordType) -> Found<'_> {
        let key = key_of(name);
        let Some(mut node) = self.nodes.get(&self.origin_key) else { return Found::NxDomain };
        if !key.starts_with(&self.origin_key) {
            return Found::NxDomain;
        }
        let mut encloser = self.origin_key.len();
        for end in label_ends(&key).skip_while(|end| *end <= self.origin_key.len()) {
            match self.nodes.get(&key[..end]) {
                None => return self.wildcard_at(&key[..encloser]),
                Some(n) if n.cut && !(end == key.len() && qtype == RecordType::DS) => return Found::Referral(n),
                Some(n) => node = n,
            }
            encloser = end;
        }
        Found::Exact(node)
    }

    fn wildcard_at(&self, encloser: &[u8]) -> Found<'_> {
        let mut wildcard = Vec::with_capacity(encloser.len() + 2);
        wildcard.extend_from_slice(encloser);
        wildcard.extend_from_slice(&[1, b'*']);
        match self.nodes.get(&wildcard) {
            Some(node) => Found::Wildcard(node),
            None => Found::NxDomain,
        }
    }
}

/// Adds the empty names between `owner` and the apex.
fn add_empty_non_terminals(nodes: &mut BTreeMap<Name, Node>, origin: &Name, owner: Name) {
    let mut name = owner;
    while name != *origin && label_count(&name) > label_count(origin) {
        name = name.base_name();
        if nodes.contains_key(&name) {
            // an owner (walked on its own turn) or a non-terminal added
            // with all its ancestors
            return;
        }
        nodes.insert(name.clone(), Node::default());
    }
}

fn target_of(data: &RData) -> Option<&Name> {
    match data {
        RData::MX(mx) => Some(&mx.exchange),
        RData::SRV(srv) => Some(&srv.target),
        RData::NS(ns) => Some(&ns.0),
        _ => None,
    }
}

fn push_addresses(out: &mut Vec<Record>, node: &Node) {
    for t in [RecordType::A, RecordType::AAAA] {
        out.extend(node.get(t).unwrap_or_default().iter().cloned().map(in_class));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::str::FromStr;

    /// The test zone of the brief, in master format.
    pub(crate) const ZONE: &str = r#"
$ORIGIN example.com.
$TTL 3600
@       IN SOA ns1 hostmaster ( 2026112601 7200 900 1209600 300 )
        NS   ns1
        NS   ns.example.net.          ; out of zone
        MX   10 mail
ns1     A    198.51.100.1
mail    A    198.51.100.25
        AAAA 2001:db8::25
www  300 A   198.51.100.80
        AAAA 2001:db8::80
alias   CNAME www
alias2  CNAME alias
out     CNAME www.example.net.
dangling CNAME nothere
loop1   CNAME loop2
loop2   CNAME loop1
*.w     TXT  "wildcard"
a.b.c   TXT  "deep"
sub     NS   ns.sub
        NS   ns.example.net.
ns.sub  A    198.51.100.53
_sip._tcp SRV 0 5 5060 www
*.cw    CNAME www
tosub   CNAME host.sub
towild  CNAME x.w
"#;

    pub(crate) fn zone() -> IndexedZone {
        let origin = Name::from_str("example.com.").unwrap();
        let zone = crate::master::parse(ZONE, "test.zone", &origin).unwrap_or_else(|e| panic!("{e:?}"));
        IndexedZone::new(&zone)
    }

    fn q(name: &str, t: RecordType) -> Answer {
        zone().lookup(&Name::from_str(name).unwrap(), t)
    }

    fn names(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| format!("{} {}", r.name, r.record_type())).collect()
    }

    fn soa_only(a: &Answer) {
        assert_eq!(names(&a.authority), ["example.com. SOA"]);
        assert_eq!(a.authority[0].ttl, 300, "min(SOA TTL, minimum)");
    }

    #[test]
    fn exact_answers_are_authoritative_with_additional() {
        let a = q("www.example.com.", RecordType::A);
        assert_eq!((a.outcome, a.authoritative), (Outcome::Answer, true));
        assert_eq!(names(&a.answers), ["www.example.com. A"]);
        assert_eq!(a.answers[0].ttl, 300);
        assert!(a.authority.is_empty());
        let mx = q("example.com.", RecordType::MX);
        assert_eq!(names(&mx.additional), ["mail.example.com. A", "mail.example.com. AAAA"]);
        let ns = q("example.com.", RecordType::NS);
        assert_eq!(names(&ns.additional), ["ns1.example.com. A"], "out-of-zone NS target has none");
        let srv = q("_sip._tcp.example.com.", RecordType::SRV);
        assert_eq!(names(&srv.additional), ["www.example.com. A", "www.example.com. AAAA"]);
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(q("WwW.ExAmPlE.cOm.", RecordType::A).outcome, Outcome::Answer);
    }

    #[test]
    fn cname_chains_are_followed_and_bounded() {
        let a = q("alias2.example.com.", RecordType::A);
        assert_eq!(names(&a.answers), ["alias2.example.com. CNAME", "alias.example.com. CNAME", "www.example.com. A"]);
        assert_eq!(a.outcome, Outcome::Answer);
        let out = q("out.example.com.", RecordType::A);
        assert_eq!((names(&out.answers), out.outcome), (vec!["out.example.com. CNAME".to_string()], Outcome::Answer));
        let cname = q("alias.example.com.", RecordType::CNAME);
        assert_eq!(names(&cname.answers), ["alias.example.com. CNAME"]);
        let looped = q("loop1.example.com.", RecordType::A);
        assert_eq!(names(&looped.answers), ["loop1.example.com. CNAME", "loop2.example.com. CNAME"]);
        let dangling = q("dangling.example.com.", RecordType::A);
        assert_eq!(dangling.outcome, Outcome::NxDomain, "RFC 6604: the last link's rcode");
        assert_eq!(names(&dangling.answers), ["dangling.example.com. CNAME"]);
        soa_only(&dangling);
    }

    #[test]
    fn long_chains_stop_after_max_chain_links() {
        let mut text = "$TTL 60\n@ SOA ns1 h 1 1 1 1 1\n NS ns1\nns1 A 198.51.100.1\n".to_string();
        text.extend((0..12).map(|i| format!("c{i} CNAME c{}\n", i + 1)));
        text.push_str("c12 A 198.51.100.12\n");
        let origin = Name::from_str("example.com.").unwrap();
        let zone = IndexedZone::new(&crate::master::parse(&text, "t", &origin).unwrap());
        let a = zone.lookup(&Name::from_str("c0.example.com.").unwrap(), RecordType::A);
        assert_eq!(a.answers.len(), MAX_CHAIN);
        assert!(a.answers.iter().all(|r| r.record_type() == RecordType::CNAME));
        assert_eq!((a.outcome, a.authority.len()), (Outcome::Answer, 0), "the resolver follows on");
        let near = zone.lookup(&Name::from_str("c5.example.com.").unwrap(), RecordType::A);
        assert_eq!(names(&near.answers).last().map(String::as_str), Some("c12.example.com. A"));
    }

    #[test]
    fn chains_through_wildcards_and_into_delegations() {
        let a = q("x.cw.example.com.", RecordType::A);
        assert_eq!(names(&a.answers), ["x.cw.example.com. CNAME", "www.example.com. A"]);
        let a = q("towild.example.com.", RecordType::TXT);
        assert_eq!(names(&a.answers), ["towild.example.com. CNAME", "x.w.example.com. TXT"]);
        let a = q("tosub.example.com.", RecordType::A);
        assert_eq!((a.outcome, a.authoritative), (Outcome::Referral, true));
        assert_eq!(names(&a.answers), ["tosub.example.com. CNAME"]);
        assert_eq!(names(&a.authority), ["sub.example.com. NS", "sub.example.com. NS"]);
    }

    #[test]
    fn wildcards_per_rfc_4592() {
        let a = q("x.w.example.com.", RecordType::TXT);
        assert_eq!((a.outcome, names(&a.answers)), (Outcome::Answer, vec!["x.w.example.com. TXT".to_string()]));
        assert_eq!(a.rrl_name, Name::from_str("*.w.example.com.").unwrap());
        let deep = q("y.x.w.example.com.", RecordType::TXT);
        assert_eq!(names(&deep.answers), ["y.x.w.example.com. TXT"]);
        let nodata = q("x.w.example.com.", RecordType::A);
        assert_eq!((nodata.outcome, nodata.answers.len()), (Outcome::NoData, 0));
        soa_only(&nodata);
        // w itself is an empty non-terminal: it exists, so no wildcard
        assert_eq!(q("w.example.com.", RecordType::TXT).outcome, Outcome::NoData);
    }

    #[test]
    fn empty_non_terminals_are_nodata() {
        for name in ["b.c.example.com.", "c.example.com."] {
            let a = q(name, RecordType::A);
            assert_eq!(a.outcome, Outcome::NoData, "{name}");
            soa_only(&a);
        }
        let a = q("x.b.c.example.com.", RecordType::A);
        assert_eq!(a.outcome, Outcome::NxDomain);
        assert_eq!(a.rrl_name, Name::from_str("example.com.").unwrap());
        soa_only(&a);
        assert!(a.authoritative);
    }

    #[test]
    fn delegations_give_referrals_with_glue() {
        for name in ["sub.example.com.", "ns.sub.example.com.", "deep.below.sub.example.com."] {
            let a = q(name, RecordType::A);
            assert_eq!((a.outcome, a.authoritative), (Outcome::Referral, false), "{name}");
            assert!(a.answers.is_empty(), "{name}: never answered from the parent");
            assert_eq!(names(&a.authority), ["sub.example.com. NS", "sub.example.com. NS"]);
            assert_eq!(names(&a.additional), ["ns.sub.example.com. A"]);
            assert!(a.additional_required);
        }
    }

    /// The rules written the slow, obvious way (scans allowed here), for
    /// zones without CNAMEs: what exists, where the cuts are, which
    /// wildcard applies.
    fn reference(zone: &Zone, qname: &Name, qtype: RecordType) -> Outcome {
        let origin = zone.origin();
        let owners: Vec<(Name, RecordType)> = zone.records().map(|r| (r.name.clone(), r.record_type())).collect();
        let exists = |n: &Name| owners.iter().any(|(o, _)| n.zone_of(o));
        let has = |n: &Name, t: RecordType| owners.iter().any(|(o, ty)| o == n && *ty == t);
        let ancestors: Vec<Name> = (label_count(origin)..=label_count(qname)).map(|k| qname.trim_to(k)).collect();
        if ancestors.iter().any(|a| a != origin && has(a, RecordType::NS)) {
            return Outcome::Referral;
        }
        if exists(qname) {
            return if has(qname, qtype) { Outcome::Answer } else { Outcome::NoData };
        }
        let Some(encloser) = ancestors.iter().rev().find(|a| exists(a)) else { return Outcome::NxDomain };
        match encloser.prepend_label("*") {
            // a wildcard that is only an empty non-terminal still exists
            // (RFC 4592 §2.2.1): NODATA, hickory-dns#1275
            Ok(w) if exists(&w) => {
                if has(&w, qtype) {
                    Outcome::Answer
                } else {
                    Outcome::NoData
                }
            }
            _ => Outcome::NxDomain,
        }
    }

    /// A zone from random records, dropping those validation refuses.
    fn valid_zone(records: Vec<(Vec<&str>, u8)>) -> Zone {
        let origin = Name::from_str("example.com.").unwrap();
        let soa = "@ 60 SOA ns1 h 1 1 1 1 1\n@ 60 NS ns1.example.net.\n";
        let base = crate::master::parse(soa, "t", &origin).unwrap();
        let mut all: Vec<Record> = base.records().collect();
        for (labels, kind) in records {
            let owner = labels.iter().fold(origin.clone(), |n, l| n.prepend_label(*l).unwrap());
            let data = match kind % 4 {
                0 | 1 => RData::A(std::net::Ipv4Addr::new(198, 51, 100, kind).into()),
                2 => RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["t".into()])),
                _ => RData::NS(hickory_proto::rr::rdata::NS(Name::from_str("ns.example.net.").unwrap())),
            };
            all.push(in_class(Record::from_rdata(owner, 60, data)));
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

    fn labels(max: usize) -> impl proptest::strategy::Strategy<Value = Vec<&'static str>> {
        use proptest::prelude::*;
        proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("*"), Just("C")], 0..max)
    }

    proptest::proptest! {
        #[test]
        fn lookup_agrees_with_the_obvious_rules(
            records in proptest::collection::vec((labels(4), proptest::prelude::any::<u8>()), 0..12),
            queries in proptest::collection::vec(labels(5), 1..20),
            qtype in proptest::prelude::prop_oneof![
                proptest::prelude::Just(RecordType::A),
                proptest::prelude::Just(RecordType::TXT),
                proptest::prelude::Just(RecordType::MX)
            ],
        ) {
            let zone = valid_zone(records);
            let indexed = IndexedZone::new(&zone);
            for q in queries {
                let qname = q.iter().fold(zone.origin().clone(), |n, l| n.prepend_label(*l).unwrap());
                let got = indexed.lookup(&qname, qtype);
                proptest::prop_assert_eq!(got.outcome, reference(&zone, &qname, qtype), "{} {}", qname, qtype);
                let negative = matches!(got.outcome, Outcome::NoData | Outcome::NxDomain);
                proptest::prop_assert_eq!(negative, !got.authority.is_empty() && got.authority[0].record_type() == RecordType::SOA);
            }
        }
    }

    #[test]
    fn ds_at_a_cut_is_the_parents_and_foreign_names_are_not_ours() {
        let ds = q("sub.example.com.", RecordType::DS);
        assert_eq!((ds.outcome, ds.authoritative), (Outcome::NoData, true));
        soa_only(&ds);
        assert_eq!(q("x.sub.example.com.", RecordType::DS).outcome, Outcome::Referral);
        let foreign = q("www.example.net.", RecordType::A);
        assert_eq!((foreign.outcome, foreign.authoritative, foreign.answers.len()), (Outcome::OutOfZone, false, 0));
    }

    #[test]
    fn any_returns_one_rrset() {
        let a = q("www.example.com.", RecordType::ANY);
        assert_eq!(names(&a.answers), ["www.example.com. A"]);
        let apex = q("example.com.", RecordType::ANY);
        assert_eq!(names(&apex.answers), ["example.com. SOA"]);
        let wildcard = q("x.w.example.com.", RecordType::ANY);
        assert_eq!(names(&wildcard.answers), ["x.w.example.com. TXT"]);
        assert_eq!(q("b.c.example.com.", RecordType::ANY).outcome, Outcome::NoData);
    }
}
