//! The zone model: an origin, its SOA, and RRsets keyed by (owner, type),
//! validated as a whole so that a zone either exists complete and
//! consistent or not at all.
//!
//! Rules (each a [`Problem`]):
//! - every owner is the origin or below it;
//! - only the types hostgate serves (A, AAAA, CNAME, MX, TXT, SRV, CAA, NS,
//!   PTR, SOA), class IN;
//! - exactly one SOA, at the apex;
//! - NS at the apex is required, as BIND's named-checkzone does: a zone
//!   without it cannot be delegated to, and every referral and negative
//!   answer a resolver caches would point nowhere;
//! - a CNAME is alone at its name (RFC 1034 §3.6.2), never at the apex, and
//!   single;
//! - the records of one RRset share one TTL (RFC 2181 §5.2: we refuse
//!   rather than silently lowering them);
//! - at and below a delegation only NS (at the cut) and address records
//!   (glue) may exist: anything else would be occluded, never served;
//! - no NS at a wildcard owner (RFC 4592 §4.2).

use std::collections::BTreeMap;

use hickory_proto::rr::{rdata::SOA, DNSClass, Name, RData, Record, RecordType};

/// The record types a zone may hold.
pub const SUPPORTED_TYPES: [RecordType; 10] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::NS,
    RecordType::PTR,
    RecordType::SOA,
];

/// Records of one (owner, type): one TTL, distinct data in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrSet {
    pub ttl: u32,
    pub data: Vec<RData>,
}

/// What is wrong with a zone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("origin {0} is not a fully qualified name")]
    OriginNotFqdn(Name),
    #[error("{owner} is outside the zone {origin}")]
    OutsideZone { owner: Name, origin: Name },
    #[error("record type {0} is not supported")]
    UnsupportedType(RecordType),
    #[error("class {0} is not supported (only IN)")]
    UnsupportedClass(DNSClass),
    #[error("no SOA record at the apex")]
    NoSoa,
    #[error("SOA at {0}: the SOA belongs at the apex")]
    SoaNotAtApex(Name),
    #[error("more than one SOA record")]
    ManySoa,
    #[error("no NS records at the apex")]
    NoApexNs,
    #[error("CNAME at the apex (the apex holds SOA and NS)")]
    CnameAtApex,
    #[error("{0} has a CNAME and other data ({1})")]
    CnameAndOther(Name, RecordType),
    #[error("{0} has more than one CNAME record")]
    ManyCname(Name),
    #[error("{owner} {rtype}: records of one RRset have different TTLs ({first} and {other})")]
    TtlMismatch { owner: Name, rtype: RecordType, first: u32, other: u32 },
    #[error("{owner} {rtype}: at or below the delegation {cut} only NS and glue (A/AAAA) may exist")]
    BelowDelegation { owner: Name, rtype: RecordType, cut: Name },
    #[error("{0}: NS at a wildcard name")]
    WildcardNs(Name),
}

/// A problem and, when one record causes it, that record's position in
/// the input (so a file parser can name the line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct ZoneError {
    pub record: Option<usize>,
    pub problem: Problem,
}

impl ZoneError {
    fn at(record: usize, problem: Problem) -> Self {
        Self { record: Some(record), problem }
    }
    fn zone(problem: Problem) -> Self {
        Self { record: None, problem }
    }
}

/// RRsets are keyed by owner (canonical order, case-insensitive) and the
/// type's code (`RecordType` has no order of its own).
pub type RrKey = (Name, u16);

/// A validated zone. Immutable except through [`Zone::bump_serial`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    origin: Name,
    soa_ttl: u32,
    soa: SOA,
    /// Every RRset except the SOA.
    rrsets: BTreeMap<RrKey, RrSet>,
}

impl Zone {
    /// Builds and validates a zone; all problems are reported, not just the
    /// first.
    pub fn new(origin: Name, records: impl IntoIterator<Item = Record>) -> Result<Self, Vec<ZoneError>> {
        if !origin.is_fqdn() {
            return Err(vec![ZoneError::zone(Problem::OriginNotFqdn(origin))]);
        }
        let mut errors = Vec::new();
        let mut soa: Option<(u32, SOA)> = None;
        let mut rrsets: BTreeMap<RrKey, RrSet> = BTreeMap::new();
        let mut first_index: BTreeMap<RrKey, usize> = BTreeMap::new();
        for (i, record) in records.into_iter().enumerate() {
            if let Some(problem) = check_record(&origin, &record) {
                errors.push(ZoneError::at(i, problem));
                continue;
            }
            if let RData::SOA(s) = record.data {
                match soa {
                    Some(_) => errors.push(ZoneError::at(i, Problem::ManySoa)),
                    None => soa = Some((record.ttl, s)),
                }
                continue;
            }
            let key = (record.name.clone(), u16::from(record.record_type()));
            first_index.entry(key.clone()).or_insert(i);
            if let Some(problem) = add(&mut rrsets, key, record) {
                errors.push(ZoneError::at(i, problem));
            }
        }
        let Some((soa_ttl, soa)) = soa else {
            errors.push(ZoneError::zone(Problem::NoSoa));
            return Err(errors);
        };
        let zone = Self { origin, soa_ttl, soa, rrsets };
        errors.extend(zone.structure_errors(&first_index));
        if errors.is_empty() {
            Ok(zone)
        } else {
            Err(errors)
        }
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn soa(&self) -> &SOA {
        &self.soa
    }

    pub fn soa_ttl(&self) -> u32 {
        self.soa_ttl
    }

    /// The SOA as a record.
    pub fn soa_record(&self) -> Record {
        in_class(Record::from_rdata(self.origin.clone(), self.soa_ttl, RData::SOA(self.soa.clone())))
    }

    /// Every RRset but the SOA, in canonical name order.
    pub fn rrsets(&self) -> impl Iterator<Item = (&Name, RecordType, &RrSet)> {
        self.rrsets.iter().map(|((owner, code), set)| (owner, RecordType::from(*code), set))
    }

    /// Every record, SOA first (the order of a zone transfer, without the
    /// closing SOA).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        std::iter::once(self.soa_record()).chain(self.rrsets().flat_map(|(owner, _, set)| {
            set.data.iter().map(move |d| in_class(Record::from_rdata(owner.clone(), set.ttl, d.clone())))
        }))
    }

    /// Moves the serial forward (see [`next_serial`]) and returns it.
    pub fn bump_serial(&mut self, today_yyyymmdd: Option<u32>) -> u32 {
        self.soa.serial = next_serial(self.soa.serial, today_yyyymmdd);
        self.soa.serial
    }

    /// The rules that need the whole zone: apex NS, CNAME exclusivity,
    /// delegations.
    fn structure_errors(&self, first_index: &BTreeMap<RrKey, usize>) -> Vec<ZoneError> {
        let mut errors = Vec::new();
        let ns = u16::from(RecordType::NS);
        if !self.rrsets.contains_key(&(self.origin.clone(), ns)) {
            errors.push(ZoneError::zone(Problem::NoApexNs));
        }
        let at = |key: &RrKey, p| ZoneError { record: first_index.get(key).copied(), problem: p };
        for (key, set) in &self.rrsets {
            let (owner, code) = key;
            let rtype = RecordType::from(*code);
            if let Some(p) = self.cname_problem(owner, rtype, set) {
                errors.push(at(key, p));
            }
            if rtype == RecordType::NS && owner.is_wildcard() {
                errors.push(at(key, Problem::WildcardNs(owner.clone())));
            }
            if let Some(cut) = self.enclosing_cut(owner) {
                let glue = matches!(rtype, RecordType::A | RecordType::AAAA);
                let cut_ns = rtype == RecordType::NS && cut == *owner;
                if !glue && !cut_ns {
                    errors.push(at(key, Problem::BelowDelegation { owner: owner.clone(), rtype, cut }));
                }
            }
        }
        errors
    }

    fn cname_problem(&self, owner: &Name, rtype: RecordType, set: &RrSet) -> Option<Problem> {
        if rtype != RecordType::CNAME {
            return None;
        }
        if *owner == self.origin {
            return Some(Problem::CnameAtApex);
        }
        if set.data.len() > 1 {
            return Some(Problem::ManyCname(owner.clone()));
        }
        let other = self.types_at(owner).find(|t| *t != RecordType::CNAME)?;
        Some(Problem::CnameAndOther(owner.clone(), other))
    }

    /// The types present at `owner`: a range of the map, not a scan.
    fn types_at<'a>(&'a self, owner: &Name) -> impl Iterator<Item = RecordType> + 'a {
        let lo = (owner.clone(), 0);
        let hi = (owner.clone(), u16::MAX);
        self.rrsets.range(lo..=hi).map(|((_, code), _)| RecordType::from(*code))
    }

    /// The highest delegation point (NS below the apex) at or above `name`.
    pub(crate) fn enclosing_cut(&self, name: &Name) -> Option<Name> {
        let ns = u16::from(RecordType::NS);
        let apex_labels = label_count(&self.origin);
        (apex_labels + 1..=label_count(name))
            .map(|k| name.trim_to(k))
            .find(|n| self.rrsets.contains_key(&(n.clone(), ns)))
    }
}

/// Per-record checks that need nothing else.
fn check_record(origin: &Name, record: &Record) -> Option<Problem> {
    let rtype = record.record_type();
    if !SUPPORTED_TYPES.contains(&rtype) {
        return Some(Problem::UnsupportedType(rtype));
    }
    if record.dns_class != DNSClass::IN {
        return Some(Problem::UnsupportedClass(record.dns_class));
    }
    if !record.name.is_fqdn() || !origin.zone_of(&record.name) {
        return Some(Problem::OutsideZone { owner: record.name.clone(), origin: origin.clone() });
    }
    if rtype == RecordType::SOA && record.name != *origin {
        return Some(Problem::SoaNotAtApex(record.name.clone()));
    }
    None
}

/// Adds a record to its RRset; identical data is kept once, as BIND and
/// NSD do.
fn add(rrsets: &mut BTreeMap<RrKey, RrSet>, key: RrKey, record: Record) -> Option<Problem> {
    let rtype = record.record_type();
    let set = rrsets.entry(key).or_insert_with(|| RrSet { ttl: record.ttl, data: Vec::new() });
    if set.ttl != record.ttl {
        return Some(Problem::TtlMismatch { owner: record.name, rtype, first: set.ttl, other: record.ttl });
    }
    if !set.data.contains(&record.data) {
        set.data.push(record.data);
    }
    None
}

pub(crate) fn in_class(mut record: Record) -> Record {
    record.dns_class = DNSClass::IN;
    record
}

/// Labels in a name, a leading `*` included (`Name::num_labels` leaves it
/// out, `Name::trim_to` counts it).
pub(crate) fn label_count(name: &Name) -> usize {
    name.iter().count()
}

/// RFC 1982 serial arithmetic: is `a` before `b`?
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

/// The serial after `current`: `today * 100` (the YYYYMMDDnn convention)
/// when a date is given and that is ahead of `current` in RFC 1982 terms,
/// else `current + 1` (wrapping, which RFC 1982 allows: the result is
/// always "greater" than `current`).
pub fn next_serial(current: u32, today_yyyymmdd: Option<u32>) -> u32 {
    let dated = today_yyyymmdd.and_then(|d| d.checked_mul(100));
    match dated {
        Some(d) if serial_lt(current, d) => d,
        _ => current.wrapping_add(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn rec(owner: &str, ttl: u32, data: RData) -> Record {
        in_class(Record::from_rdata(name(owner), ttl, data))
    }

    fn soa() -> Record {
        rec(
            "example.com.",
            3600,
            RData::SOA(SOA::new(name("ns1.example.com."), name("hostmaster.example.com."), 1, 7200, 900, 1209600, 300)),
        )
    }

    fn ns(owner: &str, target: &str) -> Record {
        rec(owner, 3600, RData::NS(hickory_proto::rr::rdata::NS(name(target))))
    }

    fn a(owner: &str, ip: &str) -> Record {
        rec(owner, 300, RData::A(ip.parse().unwrap_or_else(|_| panic!("{ip}"))))
    }

    fn cname(owner: &str, target: &str) -> Record {
        rec(owner, 300, RData::CNAME(hickory_proto::rr::rdata::CNAME(name(target))))
    }

    fn problems(records: Vec<Record>) -> Vec<Problem> {
        match Zone::new(name("example.com."), records) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.problem).collect(),
        }
    }

    fn base() -> Vec<Record> {
        vec![soa(), ns("example.com.", "ns1.example.com."), a("ns1.example.com.", "198.51.100.1")]
    }

    #[test]
    fn a_minimal_zone_is_valid() {
        assert_eq!(problems(base()), vec![]);
    }

    #[test]
    fn owner_outside_the_zone() {
        let mut r = base();
        r.push(a("www.example.net.", "198.51.100.2"));
        assert!(matches!(problems(r)[..], [Problem::OutsideZone { .. }]));
    }

    #[test]
    fn soa_is_required_single_and_at_the_apex() {
        assert_eq!(problems(base()[1..].to_vec()), vec![Problem::NoSoa]);
        let mut r = base();
        r.push(soa());
        assert_eq!(problems(r), vec![Problem::ManySoa]);
        let mut r = base();
        let mut other = soa();
        other.name = name("www.example.com.");
        r.push(other);
        assert_eq!(problems(r), vec![Problem::SoaNotAtApex(name("www.example.com."))]);
    }

    #[test]
    fn apex_ns_is_required() {
        assert_eq!(problems(vec![soa()]), vec![Problem::NoApexNs]);
    }

    #[test]
    fn cname_rules() {
        let mut r = base();
        r.push(cname("example.com.", "www.example.net."));
        assert!(problems(r).contains(&Problem::CnameAtApex));
        let mut r = base();
        r.push(cname("www.example.com.", "a.example.net."));
        r.push(a("www.example.com.", "198.51.100.3"));
        assert_eq!(problems(r), vec![Problem::CnameAndOther(name("www.example.com."), RecordType::A)]);
        let mut r = base();
        r.push(cname("www.example.com.", "a.example.net."));
        r.push(cname("www.example.com.", "b.example.net."));
        assert_eq!(problems(r), vec![Problem::ManyCname(name("www.example.com."))]);
    }

    #[test]
    fn ttls_of_one_rrset_must_agree_and_duplicates_merge() {
        let mut r = base();
        r.push(a("www.example.com.", "198.51.100.3"));
        r.push(a("www.example.com.", "198.51.100.3"));
        let zone = Zone::new(name("example.com."), r.clone()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(zone.records().count(), 4);
        let mut other = a("www.example.com.", "198.51.100.4");
        other.ttl = 60;
        r.push(other);
        assert!(matches!(problems(r)[..], [Problem::TtlMismatch { first: 300, other: 60, .. }]));
    }

    #[test]
    fn below_a_delegation_only_glue() {
        let mut r = base();
        r.push(ns("sub.example.com.", "ns.sub.example.com."));
        r.push(a("ns.sub.example.com.", "198.51.100.9"));
        assert_eq!(problems(r.clone()), vec![]);
        r.push(cname("www.sub.example.com.", "example.com."));
        assert!(matches!(problems(r)[..], [Problem::BelowDelegation { .. }]));
    }

    #[test]
    fn errors_name_the_record() {
        let mut r = base();
        r.push(a("www.example.net.", "198.51.100.2"));
        let errors = Zone::new(name("example.com."), r).err().unwrap_or_default();
        assert_eq!(errors[0].record, Some(3));
    }

    #[test]
    fn serials_move_forward() {
        assert_eq!(next_serial(1, None), 2);
        assert_eq!(next_serial(u32::MAX, None), 0);
        assert_eq!(next_serial(1, Some(20261126)), 2026112600);
        assert_eq!(next_serial(2026112600, Some(20261126)), 2026112601);
        assert!(serial_lt(u32::MAX, 0));
    }

    proptest! {
        #[test]
        fn next_serial_is_always_greater(current in any::<u32>(), date in proptest::option::of(19700101u32..21000101)) {
            prop_assert!(serial_lt(current, next_serial(current, date)));
        }
    }
}
