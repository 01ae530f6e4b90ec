//! The zones served, and which one answers a name: the closest enclosing
//! zone, found by trying the qname's suffixes from the longest, one map
//! lookup per label (not a scan over the zones: the CoreDNS file plugin's
//! linear walk cost 2,000 zones 100 % of 32 cores, coredns#5661).

use std::collections::BTreeMap;
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};

use crate::lookup::{key_of, label_ends, IndexedZone};

/// An immutable set of zones; the daemon builds a new one on change and
/// swaps it in.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// By the origin's [`key_of`]: a suffix of a name is a prefix of its key.
    zones: BTreeMap<Vec<u8>, Arc<IndexedZone>>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the zone of its origin; returns the one replaced.
    pub fn insert(&mut self, zone: Arc<IndexedZone>) -> Option<Arc<IndexedZone>> {
        self.zones.insert(key_of(zone.origin()), zone)
    }

    pub fn remove(&mut self, origin: &Name) -> Option<Arc<IndexedZone>> {
        self.zones.remove(&key_of(origin))
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn zones(&self) -> impl Iterator<Item = &Arc<IndexedZone>> {
        self.zones.values()
    }

    /// The closest enclosing zone of `qname`, if we serve one. A DS
    /// record lives in the parent (RFC 4035 §3.1.4.1): for a DS query at
    /// a zone's apex the search starts one label up.
    pub fn find(&self, qname: &Name, qtype: RecordType) -> Option<&Arc<IndexedZone>> {
        if self.zones.is_empty() {
            return None;
        }
        let key = key_of(qname);
        let mut ends: Vec<usize> = std::iter::once(0).chain(label_ends(&key)).collect();
        if qtype == RecordType::DS {
            ends.pop();
        }
        let found = ends.iter().rev().find_map(|end| self.zones.get(&key[..*end]));
        // the root's DS, or a DS whose parent we do not serve, is still
        // ours to refuse or answer from the zone itself
        found.or_else(|| self.zones.get(&key))
    }
}

impl FromIterator<IndexedZone> for Catalog {
    fn from_iter<I: IntoIterator<Item = IndexedZone>>(iter: I) -> Self {
        Self { zones: iter.into_iter().map(|z| (key_of(z.origin()), Arc::new(z))).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn zone(origin: &str) -> IndexedZone {
        let text = "$TTL 60\n@ SOA ns1 h 1 1 1 1 1\n NS ns1\nns1 A 198.51.100.1\n";
        let origin = Name::from_str(origin).unwrap();
        IndexedZone::new(&crate::master::parse(text, "t", &origin).unwrap())
    }

    #[test]
    fn the_closest_enclosing_zone_answers() {
        let catalog: Catalog = ["example.com.", "sub.example.com.", "example.net."].into_iter().map(zone).collect();
        let find = |q: &str, t| catalog.find(&Name::from_str(q).unwrap(), t).map(|z| z.origin().to_string());
        let origin = |q: &str| find(q, RecordType::A);
        assert_eq!(origin("www.example.com.").as_deref(), Some("example.com."));
        assert_eq!(origin("example.com.").as_deref(), Some("example.com."));
        assert_eq!(origin("a.b.SUB.example.com.").as_deref(), Some("sub.example.com."));
        assert_eq!(origin("example.net.").as_deref(), Some("example.net."));
        assert_eq!(origin("www.example.org."), None);
        assert_eq!(origin("com."), None);
        assert_eq!(find("sub.example.com.", RecordType::DS).as_deref(), Some("example.com."), "DS: the parent");
        assert_eq!(find("example.net.", RecordType::DS).as_deref(), Some("example.net."), "no parent here");
    }
}
